"""One SNN training step (forward + BPTT + SGD), this repo's execution vs the naive snnTorch tutorial loop.

Reference net (issue: conversion): conv3x3 3->32, 32->32, avgpool, 32->64, 64->64, avgpool, linear -> 10, BN after
each conv, 32x32 input, T = 8, batch 64, identical weights. The naive loop applies every layer at every time step
with ``snn.Leaky(beta=1)``. Ours computes the first conv + BN once (direct coding), runs each IF layer as one
fused autograd node per call, NHWC on CPU, under both schedules of ``nets.snn.SpikingNetwork``: ``layer`` (all T
per layer on [T*B] batches) and ``time`` (all layers per step: a step's working set stays in cache). Also timed:
the naive loop fed NHWC input, to show how much of the gain is the memory format alone. Prints step times,
ratios and peak memory (CPU: max RSS growth per variant, measured in a subprocess; GPU: max allocated), and
checks outputs against the naive loop (BN in eval mode, and in train mode, where the time schedule computes
the same per-step BN statistics as the naive loop and the layer schedule statistics over batch x time).

    python bench/snn_step.py [--device cuda] [--steps 5] [--fold 8]
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

from nets.conversion import spiking_structure  # noqa: E402
from nets.neurons import IFNeuron  # noqa: E402
from nets.snn import SpikingNetwork, resolve_schedule, stateless_prefix  # noqa: E402


def reference_ann() -> nn.Sequential:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(3, 32), *block(32, 32), nn.AvgPool2d(2), *block(32, 64), *block(64, 64),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 10))


class NaiveSNN(nn.Module):
    """The snnTorch tutorial loop over T: every layer per step, ``snn.Leaky(beta=1)`` neurons."""

    def __init__(self, converted: nn.Sequential, T: int):
        super().__init__()
        self.T = T
        self.layers = nn.ModuleList()
        for m in converted:
            if isinstance(m, IFNeuron):
                self.layers.append(snn.Leaky(beta=1.0, threshold=float(m.effective_threshold().detach()),
                                             spike_grad=m.spike_grad, reset_mechanism=m.reset_mode))
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


def build(T: int, device: str, fold: int | None, schedule: str = "layer"):
    torch.manual_seed(0)
    net = spiking_structure(reference_ann())
    for i, n in enumerate(m for m in net if isinstance(m, IFNeuron)):
        n.threshold.data.fill_(0.5 + 0.1 * i)
    ours = SpikingNetwork(net, T, fold=fold, schedule=schedule).to(device)
    naive = NaiveSNN(net, T).to(device)  # shares the very same modules (weights, masks, BN)
    return ours, naive


def step_time(model, x, y, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(steps + 1):
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
    return sorted(times)[len(times) // 2]


def one(variant: str, a) -> dict:
    ours, naive = build(a.T, a.device, a.fold, variant if variant in CONCRETE else "layer")
    model = ours if variant in CONCRETE else naive
    g = torch.Generator().manual_seed(1)
    x = torch.rand(a.batch, 3, 32, 32, generator=g).to(a.device)
    if variant == "naive_nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,), generator=g).to(a.device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = step_time(model, x, y, a.steps)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return {"variant": variant, "step_s": t, "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--fold", type=int, default=None, help="time steps per conv call, layer schedule (default: all T)")
    p.add_argument("--only", choices=["naive", "naive_nhwc", *CONCRETE], default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:  # child process: one variant, so that peak RSS is its own
        print(json.dumps(one(a.only, a)))
        return
    x = torch.rand(8, 3, 32, 32).to(a.device)
    print(f"device {a.device}, T={a.T}, batch {a.batch}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for schedule in CONCRETE:
        ours, naive = build(a.T, a.device, a.fold, schedule)
        with torch.no_grad():
            for mode in ("eval", "train"):
                ours.train(mode == "train"), naive.train(mode == "train")
                # the naive loop gets the NHWC input that ours converts to, so the reductions run in the same order
                diff = (ours(x) - naive(x.contiguous(memory_format=torch.channels_last))).abs().max().item()
                print(f"outputs vs the naive loop, {schedule} schedule, BN in {mode} mode: max abs diff {diff:.2e}"
                      + (" (BN statistics over batch x time instead of per step)" if mode == "train" and schedule == "layer" else ""))
    res = {}
    for v in ("naive", "naive_nhwc", *CONCRETE):
        cmd = [sys.executable, __file__, "--only", v, "--device", a.device, "--T", str(a.T), "--batch", str(a.batch),
               "--steps", str(a.steps)] + (["--fold", str(a.fold)] if a.fold else [])
        res[v] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    n = res["naive"]
    print(f"naive snnTorch loop   : {n['step_s'] * 1e3:8.1f} ms/step, peak memory +{n['peak_mib']:.0f} MiB")
    c = res["naive_nhwc"]  # how much of the gain is the memory format alone
    print(f"naive loop, NHWC input: {c['step_s'] * 1e3:8.1f} ms/step, peak memory +{c['peak_mib']:.0f} MiB;  "
          f"speed-up {n['step_s'] / c['step_s']:.2f}x (the memory format alone)")
    for v in CONCRETE:
        o = res[v]
        print(f"this repo, {v:>5s} sched: {o['step_s'] * 1e3:8.1f} ms/step, peak memory +{o['peak_mib']:.0f} MiB;  "
              f"speed-up {n['step_s'] / o['step_s']:.2f}x, peak memory {o['peak_mib'] / max(n['peak_mib'], 1e-9):.2f}x")
    best = min(CONCRETE, key=lambda v: res[v]["step_s"])
    with torch.no_grad():  # per-sample size of the first IF layer's input, what "auto" decides on
        features = ours.net[:stateless_prefix(ours.net)].eval()(x[:1]).numel()
    auto = resolve_schedule("auto", torch.device(a.device), features)
    print(f"best schedule on {a.device}: {best}, {n['step_s'] / res[best]['step_s']:.2f}x the naive loop's speed "
          "(target >= 1.5x; never < 1)")
    print(f"schedule 'auto' (the default) picks {auto} on {a.device}: {n['step_s'] / res[auto]['step_s']:.2f}x the naive "
          f"loop, {res[best]['step_s'] / res[auto]['step_s']:.2f}x the best schedule")


if __name__ == "__main__":
    main()
