"""Conversion fidelity before any fine-tuning: this repo's converter vs SpikingJelly's ann2snn, same ANN.

A user's own ``nn.Sequential`` (``bench/snn_step.py``'s reference net: 4 conv + BN, avg-pool, linear) is trained
(plain cross-entropy) on the embedded digits upsampled to 3x32x32, then converted without fine-tuning and
evaluated on the held-out digits at T = 4, 8, 16, 32 with

* the ``paper`` recipe (``srsnn.snn.conversion.RECIPES``: hard reset, 99.7th percentile x 0.3, BN kept and its
  statistics re-estimated on spikes; ``calib_steps`` = 32 here);
* the ``rate`` recipe without its ``v_init`` (``amplitude="threshold"``: a spike stands for its threshold,
  multiplied into the next layer; BN folded with the ANN's statistics; reset by subtraction; 99.9th percentile x 1);
* the ``rate`` recipe (**recommended without fine-tuning**): the same with the membrane starting at theta / 2;
* SpikingJelly 2.0 ``RateCodingRecipe(mode="99.9%")`` (the optional ``bench`` extra:
  ``pip install -e '.[bench]'``; the row says so when it is missing).

    python bench/conversion.py [--epochs 6] [--steps 4 8 16 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from snn_step import reference_ann  # noqa: E402

from datamodules.embedded import Digits  # noqa: E402
from srsnn.snn.conversion import convert  # noqa: E402

SETTINGS = {  # convert()'s recipe and changed settings
    "paper (hard reset, p99.7 x 0.3, BN kept)": dict(recipe="paper"),
    "rate (subtract, p99.9 x 1, amplitude theta)": dict(recipe="rate", v_init=0.0),
    "rate + v_init 0.5 (recommended, no fine-tuning)": dict(recipe="rate"),
}


def digits(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dm = Digits(image_size=size)
    dm.setup("fit")
    stack = lambda ds: (
        torch.stack([ds[i][0] for i in range(len(ds))]).expand(-1, 3, -1, -1).contiguous(),
        torch.tensor([int(ds[i][1]) for i in range(len(ds))]),
    )
    return (*stack(dm.data_train), *stack(dm.data_test))


def train_ann(x, y, epochs: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    ann = reference_ann()
    opt = torch.optim.Adam(ann.parameters(), 1e-3)
    for _ in range(epochs):
        ann.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(ann(x[idx]), y[idx]).backward()
            opt.step()
    return ann.eval()


@torch.no_grad()
def accuracy(net, x, y, **kw) -> float:
    return sum(int((net(xb, **kw).argmax(1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256))) / len(x)


@torch.no_grad()
def spikingjelly_row(ann, calib, x, y, steps: list[int]) -> list[float] | str:
    try:
        from spikingjelly.activation_based import ann2snn, functional
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    recipe = ann2snn.RateCodingRecipe(dataloader=[(c, None) for c in calib], mode="99.9%")
    snn = ann2snn.FXConverter(recipe=recipe, device="cpu").convert(copy.deepcopy(ann)).eval()
    correct = torch.zeros(max(steps))
    for xb, yb in zip(x.split(256), y.split(256)):
        functional.reset_net(snn)
        out = 0
        for t in range(max(steps)):
            out = out + snn(xb)
            correct[t] += (out.argmax(1) == yb).sum()
    return [float(correct[T - 1]) / len(x) for T in steps]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--calib_batches", type=int, default=4, help="calibration batches of 64 training images")
    p.add_argument("--calib_steps", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the table here")
    a = p.parse_args(argv)
    t0 = time.time()
    xtr, ytr, xte, yte = digits(a.size)
    ann = train_ann(xtr, ytr, a.epochs, a.seed)
    g = torch.Generator().manual_seed(a.seed + 1)
    calib = list(xtr[torch.randperm(len(xtr), generator=g)[: 64 * a.calib_batches]].split(64))
    rows = {"ANN (same at every T)": [accuracy(ann, xte, yte)] * len(a.steps)}
    for name, setting in SETTINGS.items():
        snn = convert(ann, calib, num_steps=max(a.steps), calib_steps=a.calib_steps, **setting).eval()
        rows[f"this repo, {name}"] = [accuracy(snn, xte, yte, num_steps=T) for T in a.steps]
    rows["SpikingJelly 2.0 ann2snn, RateCodingRecipe 99.9%"] = spikingjelly_row(ann, calib, xte, yte, a.steps)

    print(
        f"digits at 3x{a.size}x{a.size} ({len(xtr)} train / {len(xte)} test images), {a.epochs} ANN epochs, "
        f"{len(calib)} x 64 calibration images, T_c = {a.calib_steps}; test accuracy (%) before fine-tuning\n"
    )
    print("| converter | " + " | ".join(f"T={T}" for T in a.steps) + " |")
    print("|---|" + "---|" * len(a.steps))
    for name, accs in rows.items():
        cells = [f"{100 * v:.1f}" for v in accs] if isinstance(accs, list) else [accs] + [""] * (len(a.steps) - 1)
        print(f"| {name} | " + " | ".join(cells) + " |")
    best = rows[f"this repo, {list(SETTINGS)[-1]}"]
    ann_acc = rows["ANN (same at every T)"][0]
    print(f"\nrecommended setting - ANN at T={a.steps[-1]}: {100 * (best[-1] - ann_acc):+.1f} points")
    sj = rows["SpikingJelly 2.0 ann2snn, RateCodingRecipe 99.9%"]
    if isinstance(sj, list):
        print(
            "recommended - SpikingJelly per T: "
            + ", ".join(f"T={T} {100 * (b - s):+.1f}" for T, b, s in zip(a.steps, best, sj))
        )
    print(f"({time.time() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"steps": a.steps, "rows": rows, "args": vars(a)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
