"""A second opinion on a robustness claim: your own attack on the exported model, in ``per_sample.json`` format.

    python export.py --config <run>/config.yaml --ckpt_path <run> --out model.safetensors
    python bench/second_opinion.py model.safetensors --out theirs.json                 # APGD-CE + APGD-DLR, 100 steps
    python bench/second_opinion.py model.safetensors --out theirs.json --strong \\
        --paths "exponential(1,2)" bptr relu "triangular(1)"                             # a reviewer's budget
    python bench/second_opinion.py model.safetensors --out theirs.json --snn           # ASSG + SA-PGD, HART
    python report.py compare <test run>/evaluation/per_sample.json theirs.json

The samples are the embedded dataset's test split in ``AttackEvaluation``'s order (its first ``--samples``); the
model is rebuilt from the file alone (``srsnn.export.compact.load_compact``). Default: APGD-CE and APGD-DLR on the
model's
own forward (an SNN through its default surrogate gradient). ``--strong``: through each of ``--paths`` (names of
``srsnn.robustness.paths.paper_ensemble``), PGD-50 with 3 random restarts, APGD-CE-50 and targeted APGD-DLR-50
over every
wrong class, then Square-2000 on the model; every example is judged on the deployed model, only samples nothing
broke yet are attacked, and a sample broken at a smaller epsilon stays broken. Replace ``attacks`` with whatever
you trust.
"""

import argparse
import contextlib
import json
import os
import sys

import torch
import torchattacks
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.opinion import run_opinion  # noqa: E402
from datamodules import Digits, MNIST5k  # noqa: E402
from srsnn.export.compact import load_compact  # noqa: E402
from srsnn.robustness.attacks import SAPGD  # noqa: E402
from srsnn.robustness.paths import paper_ensemble, snn_attack_paths  # noqa: E402
from srsnn.snn.network import gradient_path  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("model")
p.add_argument("--data", choices=["digits", "mnist5k"], default="digits")
p.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.2])
p.add_argument("--samples", type=int, default=200)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--strong", action="store_true", help="the reviewer's budget above, through --paths")
p.add_argument("--paths", nargs="*", default=[], help="gradient paths (names as in attacks.json) for --strong")
p.add_argument(
    "--snn",
    action="store_true",
    help="the published SNN attacks: SA-PGD-100 x 3 starts and APGD-CE-100 through ASSG (A = 0.35, 0.425, 0.49) "
    "and HART (gamma = 0.5, 1, 2), with this script's seed (the repo tunes A and gamma on the validation split)",
)
p.add_argument("--seed", type=int, default=1234)
p.add_argument("--out", required=True)
a = p.parse_args()
model = load_compact(a.model).eval()
# the images at the size the model was trained on (the mnist5k recipe resizes to 16 x 16)
with safe_open(a.model, "pt") as f:
    size = json.loads(f.metadata()["spec"])["net"]["init_args"].get("input_size")
dm = {"digits": Digits, "mnist5k": MNIST5k}[a.data](**({"image_size": size} if size else {}))
dm.setup("test")
x, y = map(torch.stack, zip(*[(dm.data_test[i][0], torch.as_tensor(dm.data_test[i][1])) for i in range(a.samples)]))
members = {m["name"]: m for m in paper_ensemble()}
unknown = [n for n in a.paths if n not in members]
if unknown:
    sys.exit(f"unknown gradient path(s) {unknown}; choose from {list(members)}")


members.update({m["name"]: m for a_, g_ in ((0.35, 0.5), (0.425, 1.0), (0.49, 2.0)) for m in snn_attack_paths(a_, g_)})


def path(name):
    if not name:
        return contextlib.nullcontext()
    m = members[name]
    return gradient_path(model, m["mode"], m.get("surrogate"), m.get("param"))


def attacks(eps):
    """(name, gradient path or None, attack) in the order they run."""
    n_cls = int(model(x[:1]).shape[1])
    if a.snn:
        out = []
        for name in [n for n in members if n.startswith(("assg", "hart"))]:
            out += [(f"sapgd/{name}", name, SAPGD(model, eps, steps=100, n_restarts=3, seed=a.seed))]
            out += [(f"apgd_ce/{name}", name, torchattacks.APGD(model, eps=eps, steps=100, loss="ce", seed=a.seed))]
        return out
    if not a.strong:
        return [
            ("apgd_ce", None, torchattacks.APGD(model, eps=eps, steps=a.steps, loss="ce", seed=a.seed)),
            ("apgd_dlr", None, torchattacks.APGD(model, eps=eps, steps=a.steps, loss="dlr", seed=a.seed)),
        ]
    out = []
    for name in a.paths or [None]:
        out += [
            (
                f"pgd50x3/{name}",
                name,
                torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 50, steps=50, random_start=True),
            )
            for _ in range(3)
        ]
        out += [
            (f"apgd_ce/{name}", name, torchattacks.APGD(model, eps=eps, steps=50, loss="ce", seed=a.seed)),
            (f"apgdt/{name}", name, torchattacks.APGDT(model, eps=eps, steps=50, n_classes=n_cls, seed=a.seed)),
        ]
    return out + [("square", None, torchattacks.Square(model, eps=eps, n_queries=2000, seed=a.seed))]


run_opinion(model, x, y, a.eps, attacks, path, a.out, a.seed)
