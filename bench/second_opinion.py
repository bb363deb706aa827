"""A second opinion on a robustness claim: your own attack on the exported model, in ``per_sample.json`` format.

    python export.py --config <run>/config.yaml --ckpt_path <run> --out model.safetensors
    python bench/second_opinion.py model.safetensors --out theirs.json        # APGD-CE + APGD-DLR, 100 steps
    python report.py compare <test run>/evaluation/per_sample.json theirs.json

The samples are the embedded digits' test split in ``AttackEvaluation``'s order (its first ``--samples``); the
model is rebuilt from the file alone (``nets.compact.load_compact``; an SNN attacked through its default surrogate
gradient). Replace ``attacks`` with whatever you trust.
"""
import argparse
import json
import os
import sys

import torch
import torchattacks

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datamodules import Digits  # noqa: E402
from nets.compact import load_compact  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("model")
p.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.2])
p.add_argument("--samples", type=int, default=200)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--out", required=True)
a = p.parse_args()
model = load_compact(a.model)
dm = Digits()
dm.setup("test")
x, y = map(torch.stack, zip(*[(dm.data_test[i][0], torch.as_tensor(dm.data_test[i][1])) for i in range(a.samples)]))
with torch.no_grad():
    clean = model(x).argmax(1) == y
samples = [{"index": i, "clean_correct": bool(c), "broken_by": {}} for i, c in enumerate(clean.tolist())]
for eps in a.eps:
    attacks = {"apgd_ce": torchattacks.APGD(model, eps=eps, steps=a.steps, loss="ce"),
               "apgd_dlr": torchattacks.APGD(model, eps=eps, steps=a.steps, loss="dlr")}
    broken = [None] * len(y)
    for name, attack in attacks.items():
        with torch.no_grad():
            fooled = model(attack(x, y)).argmax(1) != y
        broken = [b or (name if f else None) for b, f in zip(broken, fooled.tolist())]
    for s, b in zip(samples, broken):
        s["broken_by"][f"{eps:g}"] = b if s["clean_correct"] else "clean"
json.dump({"samples": samples}, open(a.out, "w"))
print(f"wrote {a.out}: " + ", ".join(f"eps={e:g}: {sum(s['broken_by'][f'{e:g}'] is None for s in samples)} robust"
                                      for e in a.eps))
