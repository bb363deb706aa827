"""A tutorial-style snnTorch network (snnTorch's tutorial 5, for the 8x8 digits) and its plain BPTT training.

    python examples/tutorial_snn.py --out mynet.pt      # trains it on the embedded digits (about a minute on 2 cores)

The net knows nothing of this repo: ``Leaky`` neurons with a fast-sigmoid surrogate, ``init_hidden=False``, a forward
that loops over the time steps and returns the spike and membrane records ``[T, batch, 10]``. ``conf/digits/
native_snn.yaml`` evaluates, counts and fine-tunes it (README, "Bring your own SNN").
"""

from __future__ import annotations

import argparse
import os
import sys

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn


class TutorialSNN(nn.Module):
    """64 -> hidden -> 10 fully connected, two ``snn.Leaky`` layers, direct input at every step."""

    def __init__(self, num_inputs: int = 64, num_hidden: int = 128, num_outputs: int = 10, num_steps: int = 8,
                 beta: float = 0.9):  # fmt: skip
        super().__init__()
        self.num_steps = num_steps
        spike_grad = surrogate.fast_sigmoid()
        self.fc1 = nn.Linear(num_inputs, num_hidden)
        self.lif1 = snn.Leaky(beta=beta, spike_grad=spike_grad)
        self.fc2 = nn.Linear(num_hidden, num_outputs)
        self.lif2 = snn.Leaky(beta=beta, spike_grad=spike_grad)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        x = x.flatten(1)
        spk2_rec, mem2_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


def train(out: str, epochs: int = 30, seed: int = 0) -> float:
    """Plain BPTT on the digits' training split (cross-entropy on the spike counts); returns the test accuracy."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from datamodules import Digits

    torch.manual_seed(seed)
    dm = Digits(batch_size=64)
    dm.setup("fit")
    net = TutorialSNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for x, y in dm.train_dataloader():
            loss = nn.functional.cross_entropy(net(x)[0].sum(0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    dm.setup("test")
    with torch.no_grad():
        correct = sum(int((net(x)[0].sum(0).argmax(1) == y).sum()) for x, y in dm.test_dataloader())
    torch.save(net.state_dict(), out)
    return correct / len(dm.data_test)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="mynet.pt")
    p.add_argument("--epochs", type=int, default=30)
    a = p.parse_args()
    print(f"test accuracy {100 * train(a.out, a.epochs):.1f} %; wrote {a.out}")
