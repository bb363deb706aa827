"""The loop both second-opinion scripts share: attacks in order on the samples nothing broke yet, every example judged
on the deployed model, written as ``per_sample.json`` (``srsnn.robustness.results.PerSample``), with the adversarial
example of every break beside it (``<out>.adversarial.safetensors.gz``, the cards' format) so that each break can be
judged again on the repo's own model (``bench/judge_examples.py``)."""

from __future__ import annotations

import torch

from srsnn.robustness.results import Examples, PerSample, SampleRecord


def run_opinion(model, x, y, epsilons, attacks, path, out: str, seed: int, repeats=lambda name: 1) -> None:
    """``attacks(eps)`` -> ``[(name, path name, torchattacks attack)]``; ``path(name)`` a context that sets the
    gradient path; ``repeats(name)``: how many times an attack runs (each on the survivors of the last)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    samples = [SampleRecord(index=i, clean_correct=bool(c), broken_by={}) for i, c in enumerate(clean.tolist())]
    alive, examples = clean.clone(), Examples()
    for eps in sorted(epsilons):
        for name, pth, attack in attacks(eps):
            for _ in range(repeats(name)):
                idx = torch.nonzero(alive).flatten()
                if not len(idx):
                    break
                with path(pth):
                    adv = attack(x[idx], y[idx])
                assert (adv - x[idx]).abs().max() <= eps + 1e-5 and 0 <= adv.min() and adv.max() <= 1
                with torch.no_grad():
                    logits = model(adv)
                fooled = logits.argmax(1) != y[idx]  # judged on the deployed model, whatever path crafted it
                examples.keep(idx.tolist(), eps, adv, logits, y[idx])
                for i in idx[fooled].tolist():
                    samples[i].broken_by[f"{eps:g}"] = name
                alive[idx[fooled]] = False
        for s in samples:
            s.broken_by.setdefault(
                f"{eps:g}",
                None if s.clean_correct and alive[s.index] else "clean" if not s.clean_correct else "smaller eps",
            )
        print(f"eps={eps:g}: {int(alive.sum())} robust", flush=True)
    note = "broken_by: the second opinion's attack that broke the sample (null = robust)"
    PerSample(samples=samples, note=note).write(out)
    examples.write(out.removesuffix(".json") + ".adversarial.safetensors.gz")
    print(f"wrote {out} and its examples")
