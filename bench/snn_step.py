"""One SNN training step (forward + BPTT + SGD), this repo's execution vs the naive snnTorch tutorial loop.

Three nets, T = 8, batch 64, identical weights: ``reference`` (conv3x3 3->32, 32->32, avgpool, 32->64, 64->64,
avgpool, linear -> 10, BN after each conv, 32x32 input), and the networks of the offline recipes, ``digits``
(SmallCNN width 16, 1x8x8) and ``mnist5k`` (SmallCNN width 16, 1x16x16). The naive loop applies every layer at
every time step with ``snn.Leaky(beta=1)`` and PyTorch's own ``nn.AvgPool2d``. Ours computes the first conv + BN
once (direct coding), runs each IF layer as one fused autograd node per call, NHWC on CPU (and ``srsnn.ann.pooling``'s
exact fast 2x2 pooling where single-channel nets stay NCHW), under both schedules of
``srsnn.snn.network.SpikingNetwork``:
``layer`` (all T per layer on [T*B] batches) and ``time`` (all layers per step: a step's working set stays in
cache). Also timed: the naive loop fed NHWC input, to show how much of the gain is the memory format alone. Prints
step times, ratios and peak memory (CPU: max RSS growth per variant, measured in a subprocess; GPU: max
allocated), and checks outputs against the naive loop (BN in eval mode, and in train mode, where the time schedule
computes
the same per-step BN statistics as the naive loop and the layer schedule statistics over batch x time).

    python bench/snn_step.py [--device cuda] [--steps 5] [--min_seconds 3] [--fold 8] [--nets reference digits mnist5k]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import snntorch as snn  # noqa: E402

from srsnn.ann.architectures import SmallCNN  # noqa: E402
from srsnn.ann.pooling import AvgPool2d  # noqa: E402
from srsnn.snn.conversion import spiking_structure  # noqa: E402
from srsnn.snn.network import SpikingNetwork, resolve_schedule, stateless_prefix  # noqa: E402
from srsnn.snn.neurons import IFNeuron  # noqa: E402


def reference_ann() -> nn.Sequential:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32),
        *block(32, 32),
        nn.AvgPool2d(2),
        *block(32, 64),
        *block(64, 64),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
    )


# name -> (the ANN, the input's (channels, size))
NETS = {
    "reference": (reference_ann, (3, 32)),
    "digits": (lambda: SmallCNN(num_classes=10, in_channels=1, input_size=8, width=16), (1, 8)),
    "mnist5k": (lambda: SmallCNN(num_classes=10, in_channels=1, input_size=16, width=16), (1, 16)),
}


class NaiveSNN(nn.Module):
    """The snnTorch tutorial loop over T: every layer per step, ``snn.Leaky(beta=1)`` neurons."""

    def __init__(self, converted: nn.Sequential, T: int):
        super().__init__()
        self.T = T
        self.layers = nn.ModuleList()
        for m in converted:
            if isinstance(m, IFNeuron):
                self.layers.append(
                    snn.Leaky(
                        beta=1.0,
                        threshold=float(m.effective_threshold().detach()),
                        spike_grad=m.spike_grad,
                        reset_mechanism=m.reset_mode,
                    )
                )
            elif type(m) is AvgPool2d:  # a user's loop pools with PyTorch's own kernel, not this repo's fast path
                self.layers.append(
                    nn.AvgPool2d(
                        m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
                    )
                )
            else:
                self.layers.append(m)

    def forward(self, x):
        mems = {i: torch.zeros(0) for i, m in enumerate(self.layers) if isinstance(m, snn.Leaky)}
        out = 0
        for _ in range(self.T):
            h = x
            for i, m in enumerate(self.layers):
                if isinstance(m, snn.Leaky):
                    if mems[i].shape != h.shape:
                        mems[i] = torch.zeros_like(h)
                    h, mems[i] = m(h, mems[i])
                else:
                    h = m(h)
            out = out + h
        return out / self.T


CONCRETE = ("layer", "time")  # what "auto" chooses between


def build(name: str, T: int, device: str, fold: int | None, schedule: str = "layer"):
    torch.manual_seed(0)
    net = spiking_structure(NETS[name][0]())
    for i, n in enumerate(m for m in net if isinstance(m, IFNeuron)):
        n.threshold.data.fill_(0.5 + 0.1 * i)
    ours = SpikingNetwork(net, T, fold=fold, schedule=schedule).to(device)
    naive = NaiveSNN(net, T).to(device)  # shares the very same modules (weights, masks, BN)
    return ours, naive


def step_time(model, x, y, steps: int, min_seconds: float = 3.0) -> float:
    """Median of at least ``steps`` timed steps and ``min_seconds`` of them (small nets take ms per step)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times: list[float] = []
    i = 0
    while len(times) < steps or sum(times) < min_seconds:
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
        i += 1
    return sorted(times)[len(times) // 2]


def inputs(name: str, batch: int, device: str, seed: int = 1) -> torch.Tensor:
    c, size = NETS[name][1]
    return torch.rand(batch, c, size, size, generator=torch.Generator().manual_seed(seed)).to(device)


def one(name: str, variant: str, a) -> dict:
    ours, naive = build(name, a.T, a.device, a.fold, variant if variant in CONCRETE else "layer")
    model = ours if variant in CONCRETE else naive
    x = inputs(name, a.batch, a.device)
    g = torch.Generator().manual_seed(2)
    if variant == "naive_nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,), generator=g).to(a.device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = step_time(model, x, y, a.steps, a.min_seconds)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if a.device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    )
    return {"variant": variant, "step_s": t, "peak_mib": peak}


def check_outputs(name: str, a) -> None:
    x = inputs(name, 8, a.device, seed=0)
    for schedule in CONCRETE:
        ours, naive = build(name, a.T, a.device, a.fold, schedule)
        with torch.no_grad():
            for mode in ("eval", "train"):
                ours.train(mode == "train"), naive.train(mode == "train")
                # the naive loop gets the NHWC input that ours converts to, so the reductions run in the same order
                diff = (ours(x) - naive(x.contiguous(memory_format=torch.channels_last))).abs().max().item()
                print(
                    f"  outputs vs the naive loop, {schedule} schedule, BN in {mode} mode: max abs diff {diff:.2e}"
                    + (
                        " (BN statistics over batch x time instead of per step)"
                        if mode == "train" and schedule == "layer"
                        else ""
                    )
                )


def bench_net(name: str, a) -> float:
    """Times every variant of one net, each in its own process; returns the default (auto) schedule's speed-up."""
    channels, size = NETS[name][1]
    print(f"\n## {name} ({channels}x{size}x{size})")
    check_outputs(name, a)
    res = {}
    for v in ("naive", "naive_nhwc", *CONCRETE):
        cmd = [
            sys.executable,
            __file__,
            "--only",
            v,
            "--nets",
            name,
            "--device",
            a.device,
            "--T",
            str(a.T),
            "--batch",
            str(a.batch),
            "--steps",
            str(a.steps),
            "--min_seconds",
            str(a.min_seconds),
        ]
        cmd += ["--fold", str(a.fold)] if a.fold else []
        res[v] = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        )
    n = res["naive"]
    print(f"  naive snnTorch loop   : {n['step_s'] * 1e3:8.1f} ms/step, peak memory +{n['peak_mib']:.0f} MiB")
    c = res["naive_nhwc"]  # how much of the gain is the memory format alone
    print(
        f"  naive loop, NHWC input: {c['step_s'] * 1e3:8.1f} ms/step, peak memory +{c['peak_mib']:.0f} MiB;  "
        f"speed-up {n['step_s'] / c['step_s']:.2f}x (the memory format alone)"
    )
    for v in CONCRETE:
        o = res[v]
        print(
            f"  this repo, {v:>5s} sched: {o['step_s'] * 1e3:8.1f} ms/step, peak memory +{o['peak_mib']:.0f} MiB;  "
            f"speed-up {n['step_s'] / o['step_s']:.2f}x, peak memory {o['peak_mib'] / max(n['peak_mib'], 1e-9):.2f}x"
        )
    best = min(CONCRETE, key=lambda v: res[v]["step_s"])
    ours, _ = build(name, a.T, a.device, a.fold)
    with torch.no_grad():  # per-sample size of the first IF layer's input, what "auto" decides on
        prefix = nn.Sequential(*list(ours.net)[: stateless_prefix(ours.net)]).eval()
        features = prefix(inputs(name, 1, a.device)).numel()
    auto = resolve_schedule("auto", torch.device(a.device), features)
    ratio = n["step_s"] / res[auto]["step_s"]
    print(
        f"  schedule 'auto' (the default) picks {auto}: {ratio:.2f}x the naive loop, "
        f"{res[best]['step_s'] / res[auto]['step_s']:.2f}x the best schedule ({best})"
    )
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant, at least")
    p.add_argument("--min_seconds", type=float, default=3.0, help="timed seconds per variant, at least")
    p.add_argument("--fold", type=int, default=None, help="time steps per conv call, layer schedule (default: all T)")
    p.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    p.add_argument("--only", choices=["naive", "naive_nhwc", *CONCRETE], default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:  # child process: one variant of one net, so that peak RSS is its own
        print(json.dumps(one(a.nets[0], a.only, a)))
        return
    print(f"device {a.device}, T={a.T}, batch {a.batch}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    ratios = {name: bench_net(name, a) for name in a.nets}
    print(
        "\nthe default schedule vs the naive snnTorch loop (targets: >= 1.5x on reference, never < 1):  "
        + ",  ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )


if __name__ == "__main__":
    main()
