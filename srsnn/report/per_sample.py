"""Per-sample records (``per_sample.json``): the per-sample union of two evaluations of one model, and the exact
McNemar test of two models' worst-case outcomes on the same samples (pooled over seeds: stratified by seed)."""

from __future__ import annotations

from typing import Any, Optional

from scipy.stats import binomtest

from srsnn.errors import UserError
from srsnn.robustness.results import PerSample


def read(path: str) -> tuple[dict[int, bool], dict[str, set[int]]]:
    """``per_sample.json`` -> (clean-correct per sample index, the indices broken at each epsilon). Format (what
    ``AttackEvaluation`` writes; another attack writes the same): ``{"samples": [{"index": i, "clean_correct":
    bool, "broken_by": {"<eps>": null | "<what broke it>"}}, ...]}``, null = robust to everything that attack ran;
    a model card (``card.json``) holds the same records."""
    try:
        samples = PerSample.read(path).samples
        clean = {int(x.index): bool(x.clean_correct) for x in samples}
        broken: dict[str, set[int]] = {}
        for x in samples:
            for eps, by in x.broken_by.items():
                if by is not None and x.clean_correct:
                    broken.setdefault(f"{float(eps):.6g}", set()).add(int(x.index))
                else:
                    broken.setdefault(f"{float(eps):.6g}", set())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(
            f"{path}: not a per_sample.json ({type(err).__name__}: {err}); see `report.py compare "
            "--help` for the format"
        ) from None
    return clean, broken


def _same_model_and_data(ours: str, theirs: str) -> None:
    """Two model cards (``card.json``, which carry per-sample records too) compare only for the same weights and the
    same test images (their SHA-256)."""
    import json

    def hashes(path: str) -> Optional[tuple]:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        if not (isinstance(data, dict) and "model" in data and "data" in data):
            return None
        return data["model"].get("weights_sha256"), data["data"].get("images_sha256")

    a, b = hashes(ours), hashes(theirs)
    if a and b and a != b:
        what = "weights" if a[0] != b[0] else "test images"
        raise UserError(f"the two cards are of other {what} (SHA-256 differs): compare cards of one model and data")


def robust_samples(path: str) -> dict[str, list[int]]:
    """Per epsilon, the indices of the samples robust in the worst case."""
    clean, broken = read(path)
    return {eps: sorted(i for i, c in clean.items() if c and i not in b) for eps, b in broken.items()}


def compare(ours: str, theirs: str) -> str:
    """Per epsilon both evaluated: robust accuracy by each evaluation, by their per-sample union (a sample counts as
    robust only if neither broke it), and the samples each broke alone. Both files must cover the same samples; an
    epsilon only one of them evaluated is named, not compared (the other's "nothing broke it" would be a guess)."""
    _same_model_and_data(ours, theirs)
    (ca, ba), (cb, bb) = read(ours), read(theirs)
    if set(ca) != set(cb):
        raise UserError(
            f"the two files cover different samples ({len(ca)} vs {len(cb)}, "
            f"{len(set(ca) ^ set(cb))} indices in one only); evaluate the same test subset"
        )
    if ca != cb:
        raise UserError(
            "the two files disagree on which samples are classified correctly without attack: "
            "not the same model (or not the same samples)"
        )
    n, lines = len(ca), []
    lines += [
        "| ε | robust (ours) % | robust (theirs) % | robust (union) % | broken by ours only | by theirs only |",
        "|---|---|---|---|---|---|",
    ]
    clean = {i for i, c in ca.items() if c}
    common = sorted(set(ba) & set(bb), key=float)
    listed = lambda epsilons: ", ".join(sorted(epsilons, key=float)) or "none"
    if not common:
        raise UserError(
            f"no epsilon in both files (ours: {listed(ba)}; theirs: {listed(bb)}); attack the other "
            "at the same epsilons"
        )
    for eps in common:
        a, b = ba[eps], bb[eps]
        acc = lambda broken: 100 * len(clean - broken) / n
        only = lambda x, y: (
            f"{len(x - y)}"
            + (f" ({', '.join(map(str, sorted(x - y)[:10]))}{' ...' if len(x - y) > 10 else ''})" if x - y else "")
        )
        lines.append(f"| {eps} | {acc(a):.1f} | {acc(b):.1f} | **{acc(a | b):.1f}** | {only(a, b)} | {only(b, a)} |")
    alone = [
        f"{who} only: {listed(set(x) - set(y))}"
        for who, x, y in (("ours", ba, bb), ("theirs", bb, ba))
        if set(x) - set(y)
    ]
    if alone:
        lines += ["", f"Not compared (evaluated by one file only): {'; '.join(alone)}."]
    return "\n".join([f"{n} samples, {len(clean)} clean-correct; sample indices in brackets", "", *lines]) + "\n"


def discordant(a: dict[str, Any], b: dict[str, Any], eps: str) -> Optional[tuple[int, int]]:
    """(samples robust in the worst case for ``a`` only, for ``b`` only) at ``eps`` (None without per-sample records
    of both on the same samples)."""
    ra, rb = (r.get("robust_samples") or {} for r in (a, b))
    if eps not in ra or eps not in rb or a.get("samples") != b.get("samples"):
        return None
    x, y = set(ra[eps]), set(rb[eps])
    return len(x - y), len(y - x)


def mcnemar(a: dict[str, Any], b: dict[str, Any], eps: str) -> Optional[float]:
    """Exact two-sided McNemar p-value of two models' worst-case outcomes on the same samples at ``eps`` (None
    without per-sample records): of the samples on which they differ, is one model robust more often than chance?"""
    return stratified_mcnemar([(a, b)], eps)


def stratified_mcnemar(pairs: list[tuple[dict[str, Any], dict[str, Any]]], eps: str) -> Optional[float]:
    """Exact two-sided p-value of pairs of models compared on the same samples, one pair per seed (a stratum), at
    ``eps``: the Cochran-Mantel-Haenszel test with every matched sample its own stratum reduces to McNemar's on the
    discordant samples pooled over the strata, whose exact form is: under no effect, each of the ``n`` pooled
    discordant samples favours either model with probability 1/2, so ``min(b, c) ~ Binomial(n, 1/2)``. None where a
    pair lacks per-sample records. One pair is the ordinary exact McNemar test."""
    counts = [discordant(a, b, eps) for a, b in pairs]
    if not counts or any(c is None for c in counts):
        return None
    b, c = (sum(x[i] for x in counts) for i in (0, 1))
    return float(binomtest(min(b, c), b + c, 0.5).pvalue) if b + c else 1.0


def p_text(p: Optional[float]) -> str:
    """``, p = 0.03`` for a claim's line (nothing without a test)."""
    return "" if p is None else f", p = {p:.2g}" if p >= 0.001 else ", p < 0.001"
