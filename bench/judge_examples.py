"""Judge a second opinion's adversarial examples on the repo's own model: does each break hold, and by what margin?

    python bench/judge_examples.py <test run>/config.yaml <fit run> theirs.adversarial.safetensors.gz \\
        [--per_sample <test run>/evaluation/per_sample.json]

For every stored example (``bench/opinion.py`` writes them beside its ``per_sample.json``): the L-inf distance to
its clean image and the margin max_{k != y} z_k - z_y of the repo's deployed forward (> 0: fooled), run on the
example alone and in one batch with all the others (CPU kernels round batches of different sizes differently; a
spiking network's threshold turns such rounding into a different spike). With ``--per_sample``: what the repo's own
evaluation says of the sample at that epsilon. Then the model card's own checks of them
(``srsnn.export.card.check_examples``: the eps ball, [0, 1], fooled in batches, floating-point noise apart).
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from callbacks.shards import first_samples  # noqa: E402
from lightning_modules.loading import load_trained  # noqa: E402
from srsnn.export.card import Verdict, check_examples  # noqa: E402
from srsnn.robustness.paths import padded  # noqa: E402
from srsnn.robustness.results import Examples, margins  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("config")
p.add_argument("ckpt_path")
p.add_argument("examples")
p.add_argument("--per_sample", default=None)
a = p.parse_args()
torch.set_num_threads(1)
model, dm, _ = load_trained(a.config, a.ckpt_path)
net = padded(model)
found = Examples.read(a.examples)
idx, eps, stored, adv = found["index"].tolist(), found["eps"].tolist(), found["margin"].tolist(), found.get("x")
dm.setup("test")
x, y = first_samples(dm, max(idx) + 1 if idx else 1)
ours = json.load(open(a.per_sample))["samples"] if a.per_sample else None
with torch.no_grad():
    together = margins(net(adv).float(), y[idx]) if idx else []
    print("index  eps    L-inf    stored margin  alone margin  batch margin  the repo's record")
    held = 0
    for r, (k, e) in enumerate(zip(idx, eps)):
        z = net(adv[r : r + 1]).float()
        alone = float(margins(z, y[k : k + 1])[0])
        dist = float((adv[r] - x[k]).abs().max())
        record = ours[k]["broken_by"].get(f"{e:g}") if ours else ""
        held += int(z.argmax(1)[0] != y[k])  # as the evaluation judges: a tie whose first maximum is wrong counts
        print(f"{k:5d}  {e:<5g}  {dist:.4f}  {stored[r]:13.4f}  {alone:12.4f}  {float(together[r]):12.4f}  {record}")
verdict = Verdict()
if idx:
    check_examples(net, x, y, found, verdict)
for line in verdict.failures + [f"{n} (within floating-point noise)" for n in verdict.noise]:
    print(line)
fails = len(verdict.failures)
print(f"{held} of {len(idx)} examples fool the repo's model on their own; {fails} fail the card's checks (above)")
