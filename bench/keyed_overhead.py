"""What the per-sample random streams cost an attack step (forward + input gradient) of the digits SNN.

Every torch function the attacked model calls passes through ``srsnn.robustness.keyed``'s mode (a
``TorchFunctionMode``): its cost is (the functions one step calls through it) x (the handler's cost per call). Both
are measured apart, since timing whole steps with and without the mode on a shared 2-core machine drifts by more
than the difference: the calls per step by counting, the handler's cost per call as the median over ``--rounds`` of
a tight loop of small adds with and without the mode. Prints both and the overhead as a share of a plain step;
the speed target is at most 5 %.

    python bench/keyed_overhead.py [--rounds 7] [--T 8] [--batch 50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.snn_step import build  # noqa: E402
from srsnn.robustness.keyed import keyed_random  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--rounds", type=int, default=7)
p.add_argument("--T", type=int, default=8)
p.add_argument("--batch", type=int, default=50)
a = p.parse_args()
torch.set_num_threads(1)
net, _ = build("digits", a.T, "cpu", None)
net.eval()
x, y = torch.rand(a.batch, 1, 8, 8), torch.randint(0, 10, (a.batch,))
keys = list(range(a.batch))


def step() -> None:
    xx = x.clone().requires_grad_(True)
    torch.autograd.grad(torch.nn.functional.cross_entropy(net(xx), y), xx)


class Count(torch.overrides.TorchFunctionMode):
    calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        Count.calls += 1
        return func(*args, **(kwargs or {}))


with Count():
    step()
u, v = torch.rand(64), torch.rand(64)


def per_call(ctx, n: int = 20000) -> float:
    t = time.perf_counter()
    with ctx():
        for _ in range(n):
            torch.add(u, v)
    return (time.perf_counter() - t) / n


plain, keyed, steps = [], [], []
for _ in range(a.rounds):
    plain.append(per_call(contextlib.nullcontext))
    keyed.append(per_call(lambda: keyed_random(object(), x, keys, 0)))
    t = time.perf_counter()
    step()
    steps.append(time.perf_counter() - t)
extra = statistics.median(k - q for k, q in zip(keyed, plain))
share = Count.calls * extra / statistics.median(steps)
print(f"digits SNN attack step (T = {a.T}, batch {a.batch}, 1 thread): {1e3 * statistics.median(steps):.1f} ms")
print(f"calls through the keyed mode per step: {Count.calls}; the handler adds {1e6 * extra:.2f} us a call")
print(f"keyed overhead: {100 * share:.1f} % of a step (target <= 5 %)")
