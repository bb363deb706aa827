"""A second opinion on an snnTorch SNN's robustness: attacks written apart from the repo's evaluation, in
``per_sample.json`` format, to compare with ``report.py compare``.

    python bench/second_opinion_native.py --net examples.tutorial_snn.TutorialSNN --weights mynet.pt --out theirs.json
    python report.py compare <test run>/evaluation/per_sample.json theirs.json

The samples are the digits test split in ``AttackEvaluation``'s order (its first ``--samples``). Gradient paths are
snnTorch's own surrogates (``snntorch.surrogate``: the net's own, atan, fast sigmoid at three slopes, sigmoid,
triangular, straight-through) set on every neuron; through each, PGD-50 with 3 random starts and APGD-CE-50; through
the net's own and atan, APGD-T with every other class as a target; then Square-2000. Every example is judged on the
deployed net, and only samples nothing broke go on. ``--snn``: the published SNN-specific attacks instead (SA-PGD and
APGD-CE through the repo's ASSG, HART, PDSG and BPTR paths for snnTorch neurons, at other settings than the
evaluation's validation split chose).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch
import torchattacks
from snntorch import surrogate
from snntorch._neurons.neurons import SpikingNeuron

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.opinion import run_opinion  # noqa: E402
from datamodules import Digits  # noqa: E402
from srsnn.io.checkpoints import load_weights  # noqa: E402
from srsnn.io.dotted import import_dotted  # noqa: E402
from srsnn.robustness.attacks import SAPGD  # noqa: E402
from srsnn.robustness.paths import paper_ensemble, snn_attack_paths, use_path  # noqa: E402
from srsnn.snn.native import NativeNet  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--net", default="examples.tutorial_snn.TutorialSNN", help="the network's class path")
p.add_argument("--weights", required=True)
p.add_argument("--samples", type=int, default=200)
p.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2])
p.add_argument(
    "--snn",
    action="store_true",
    help="the published SNN attacks instead: SA-PGD-100 x 3 starts and APGD-CE-100 through ASSG (A = 0.35, 0.425, "
    "0.49), HART (gamma = 0.5, 1, 2), PDSG and BPTR (the repo's snnTorch paths, srsnn.snn.native, at this script's "
    "settings and seed)",
)
p.add_argument("--seed", type=int, default=1234)
p.add_argument("--out", required=True)
a = p.parse_args()

net = import_dotted(a.net)()
load_weights(net, a.weights, "--weights")
model = NativeNet(net).eval()
for q in model.parameters():
    q.requires_grad_(False)
dm = Digits(classes=10)
dm.setup("test")
x, y = map(torch.stack, zip(*[(dm.data_test[i][0], torch.as_tensor(dm.data_test[i][1])) for i in range(a.samples)]))
neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
own = [m.spike_grad for m in neurons]
PATHS = {
    "own": None,
    "atan": surrogate.atan(),
    "fast_sigmoid(5)": surrogate.fast_sigmoid(5),
    "fast_sigmoid(25)": surrogate.fast_sigmoid(25),
    "fast_sigmoid(75)": surrogate.fast_sigmoid(75),
    "sigmoid": surrogate.sigmoid(),
    "triangular": surrogate.triangular(),
    "straight_through": surrogate.straight_through_estimator(),
}


# the repo's own path definitions at this script's settings: ASSG at 3 A, HART at 3 gamma, PDSG, then BPTR
SETTINGS = ((0.35, 0.5), (0.425, 1.0), (0.49, 2.0))
SNN_PATHS = {
    m["name"]: m for mode in ("assg", "hart", "pdsg") for a_, g_ in SETTINGS for m in snn_attack_paths(a_, g_, (mode,))
}
SNN_PATHS |= {m["name"]: m for m in paper_ensemble() if m["mode"] == "bptr"}


@contextlib.contextmanager
def path(name):
    if name in SNN_PATHS:
        with use_path(model, SNN_PATHS[name]):
            yield
        return
    try:
        for m, g in zip(neurons, own):
            m.spike_grad = g if PATHS[name] is None else PATHS[name]
        yield
    finally:
        for m, g in zip(neurons, own):
            m.spike_grad = g


def attacks(eps):
    if a.snn:
        return [
            attack
            for name in SNN_PATHS
            for attack in (
                (f"sapgd/{name}", name, SAPGD(model, eps, steps=100, n_restarts=3, seed=a.seed)),
                (f"apgd_ce/{name}", name, torchattacks.APGD(model, eps=eps, steps=100, loss="ce", seed=a.seed)),
            )
        ]
    out = []
    for name in PATHS:
        out += [
            (f"pgd50x3/{name}", name, torchattacks.PGD(model, eps=eps, alpha=eps / 8, steps=50, random_start=True)),
            (f"apgd_ce/{name}", name, torchattacks.APGD(model, eps=eps, steps=50, loss="ce", seed=a.seed)),
        ]
        if name in ("own", "atan"):
            out.append((f"apgdt/{name}", name, torchattacks.APGDT(model, eps=eps, steps=50, n_classes=10, seed=a.seed)))
    return out + [("square", "own", torchattacks.Square(model, eps=eps, n_queries=2000, seed=a.seed))]


run_opinion(model, x, y, a.eps, attacks, path, a.out, a.seed, lambda n: 3 if n.startswith("pgd50x3") else 1)
