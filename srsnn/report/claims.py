"""The paper's claims (Schmolli et al., CPAL 2025), each answered yes / partly / no from the runs of a report, over
its seeds, with the numbers (mean over seeds, each seed's beside it) and, where both models have per-sample records,
an exact McNemar p-value (over several seeds stratified by seed). A claim that one model beats another reads yes only
where the effect has that sign in every seed and the combined test says it is not chance. Worst case at the smallest
evaluated ε unless said otherwise. Thresholds and the paper's reference numbers are data, below."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Callable, Optional

from srsnn.robustness.reporting import pct

from .per_sample import p_text, stratified_mcnemar
from .tables import converted_pairs, main_rows

CHANCE_FACTOR = 1.5  # a model with clean accuracy at most 1.5x chance (1 / classes) answers no claim about itself
CLOSE_POINTS, CLOSE_UP_TO = 5, 90  # sparse SNNs up to 90 % sparsity within 5 points of the dense SNN
FAR_POINTS, FAR_AT = 10, 99  # HYDRA / HARP at least 10 points above LWM at 99 %, clean and robust
LOSSY_CONVERSION_POINTS = 5  # conversion that loses at least 5 clean points of its ANN
ALPHA = 0.05  # a combined test below this: the effect is not chance
PAPER_ENERGY_RATIO = "8.61× for HARP 99 % on CIFAR-10"
PAPER_SNN_VS_ANN = "HYDRA 90 %, Square-5000 at 8/255: SNN 36.3 vs ANN 32.7"

Row = dict[str, Any]


def answers_claims(row: Row) -> bool:
    """A model whose evaluation finished and that is clearly above chance: only such models answer a claim (a
    collapsed model is still the baseline that HYDRA/HARP are compared with at 99 %)."""
    chance = 1 / (row.get("num_classes") or 10)
    return not row.get("interrupted") and (row["clean"] or 0) > CHANCE_FACTOR * chance


def _key(r: Row) -> tuple[Optional[str], int]:
    return r["method"], round(100 * (r["sparsity"] or 0))  # (method, sparsity %)


def _verdict(oks: list[bool]) -> str:
    return "yes" if all(oks) else "partly" if any(oks) else "no"


def _significant(ps: list[Optional[float]]) -> bool:
    """Every combined test (where per-sample records allow one) says the effect is not chance."""
    return all(p is None or p < ALPHA for p in ps)


def _directional(effects: list[list[float]], ps: list[Optional[float]], at_least: float = 0.0) -> str:
    """A claim that one model beats another: yes only where every effect (one list per comparison, one value per
    seed) exceeds ``at_least`` in every seed and every comparison's combined test gives p < ``ALPHA``; partly where
    some effect is positive in some seed; else no."""
    if all(v > at_least for vs in effects for v in vs) and _significant(ps):
        return "yes"
    return "partly" if any(v > 0 for vs in effects for v in vs) else "no"


def _points(vs: list[float]) -> str:
    """A difference in points: its mean over seeds, each seed's value in brackets where there are several."""
    return f"{fmean(vs):+.1f}" + (f" (seeds {' / '.join(f'{v:+.1f}' for v in vs)})" if len(vs) > 1 else "")


def _mean_pct(vs: list[float]) -> str:
    return pct(fmean(vs))


@dataclass
class Evidence:
    """The rows of one seed a claim reads: the models that answer claims (main table, and all with the
    converted-only ones), the finished baseline rows, and the worst case at ``eps``."""

    eps: str
    eps_cols: list[str]
    rows: list[Row]
    all_rows: list[Row]
    baseline_rows: list[Row]

    def __post_init__(self):
        self.snn = {_key(r): r for r in self.rows if r["kind"] == "snn" and r["method"]}
        self.ann = {_key(r): r for r in self.rows if r["kind"] == "ann" and r["method"]}

    def w(self, r: Row, eps: Optional[str] = None) -> float:
        return r[f"worst@{eps or self.eps}"]


def _common(evs: list[Evidence], attr: str) -> list[tuple[Optional[str], int]]:
    """The (method, sparsity) keys of ``attr`` (snn / ann) present in every seed, in order."""
    return sorted(set.intersection(*(set(getattr(e, attr)) for e in evs)), key=lambda k: (k[0] != "dense", k))


def sparse_close_to_dense(evs: list[Evidence]) -> Optional[str]:
    keys = [k for k in _common(evs, "snn") if k[0] != "dense" and 0 < k[1] <= CLOSE_UP_TO]
    if ("dense", 0) not in _common(evs, "snn") or not keys:
        return None
    ev0 = evs[0]
    dense = [e.snn[("dense", 0)] for e in evs]
    drops = [
        (
            f"{m} {p} %",
            [100 * (e.w(d) - e.w(e.snn[(m, p)])) for e, d in zip(evs, dense)],
            stratified_mcnemar([(d, e.snn[(m, p)]) for e, d in zip(evs, dense)], ev0.eps),
        )
        for m, p in keys
    ]
    return (
        f"- **Sparse SNN robustness stays close to the dense SNN up to {CLOSE_UP_TO} % sparsity** (within "
        f"{CLOSE_POINTS} points{_every(evs)}): **{_verdict([d <= CLOSE_POINTS for _, ds, _ in drops for d in ds])}**. "
        f"Dense SNN {_mean_pct([ev0.w(d) for d in dense])} %; drop in points: "
        + ", ".join(f"{n} {_points(ds)}{p_text(pv)}" for n, ds, pv in drops)
        + "."
    )


def _every(evs: list[Evidence]) -> str:
    return f", in every one of the {len(evs)} seeds" if len(evs) > 1 else ""


def hydra_harp_beat_lwm(evs: list[Evidence]) -> Optional[str]:
    lwm_of = lambda e: next((r for r in e.baseline_rows if r["kind"] == "snn" and _key(r) == ("LWM", FAR_AT)), None)
    low = [{"LWM": lwm_of(e), **{m: e.snn.get((m, FAR_AT)) for m in ("HYDRA", "HARP")}} for e in evs]
    if not all(all(d.values()) for d in low):
        return None
    ev0 = evs[0]
    robust = {m: [100 * (e.w(d[m]) - e.w(d["LWM"])) for e, d in zip(evs, low)] for m in ("HYDRA", "HARP")}
    clean = {m: [100 * (d[m]["clean"] - d["LWM"]["clean"]) for d in low] for m in ("HYDRA", "HARP")}
    ps = {m: stratified_mcnemar([(d[m], d["LWM"]) for d in low], ev0.eps) for m in ("HYDRA", "HARP")}
    verdict = _directional([*robust.values(), *clean.values()], list(ps.values()), at_least=FAR_POINTS - 1e-9)
    line = lambda m: (
        f"{m} {_mean_pct([d[m]['clean'] for d in low])} / {_mean_pct([e.w(d[m]) for e, d in zip(evs, low)])}"
    )
    return (
        f"- **At {FAR_AT} % sparsity HYDRA and HARP are far better than magnitude pruning (LWM)** (≥ {FAR_POINTS} "
        f"points, clean and robust{_every(evs)}, and not chance): **{verdict}**. SNN clean / worst case: "
        f"{line('LWM')}, {line('HYDRA')}, {line('HARP')} %; robust gain over LWM in points: "
        + ", ".join(f"{m} {_points(robust[m])}{p_text(ps[m])}" for m in ("HYDRA", "HARP"))
        + "."
    )


def energy_ratio_grows(evs: list[Evidence]) -> Optional[str]:
    ratios: dict[str, dict[int, list[float]]] = {}
    for e in evs:
        for (m, p), r in e.snn.items():
            if m != "dense" and r.get("E_dense/E_sparse"):
                ratios.setdefault(m, {}).setdefault(p, []).append(r["E_dense/E_sparse"])
    if not ratios:
        return None
    # each method's curve starts at the dense SNN (0 %, 1x): one sparsity level is already a trend; in every seed
    curves = [
        [[1.0] + [v[p][s] for p in sorted(v)] for s in range(min(len(x) for x in v.values()))] for v in ratios.values()
    ]
    grows = [all(all(b > a for a, b in zip(c, c[1:])) for c in per_seed) for per_seed in curves]
    spread = lambda xs: f" ({min(xs):.2f}–{max(xs):.2f})" if f"{min(xs):.2f}" != f"{max(xs):.2f}" else ""
    return (
        f"- **The energy ratio E_dense/E_sparse grows with sparsity** (paper: {PAPER_ENERGY_RATIO}{_every(evs)}): "
        f"**{_verdict(grows)}**. "
        + "; ".join(
            f"{m}: " + ", ".join(f"{p} % {fmean(x):.2f}×{spread(x)}" for p, x in sorted(v.items()))
            for m, v in ratios.items()
        )
        + "."
    )


def snn_at_least_as_robust_as_ann(evs: list[Evidence]) -> Optional[str]:
    keys = [k for k in _common(evs, "snn") if k in _common(evs, "ann")]
    if not keys:
        return None
    ev0 = evs[0]
    diffs = {
        k: {eps: [100 * (e.w(e.snn[k], eps) - e.w(e.ann[k], eps)) for e in evs] for eps in ev0.eps_cols} for k in keys
    }
    # "at least as robust": a tie satisfies it, so no test is needed for yes; the combined test is stated
    at_least = [all(d >= 0 for d in diffs[k][ev0.eps]) for k in keys]
    name = lambda m, p: "dense" if m == "dense" else f"{m} {p} %"
    return (
        f"- **The SNN is at least as robust as its ANN** (worst case of each model's full evaluation: the same "
        f"attacks and budgets, the SNN's also through its surrogate gradient paths; paper, {PAPER_SNN_VS_ANN}"
        f"{_every(evs)}): **{_verdict(at_least)}** at ε = {ev0.eps} ({sum(at_least)} of {len(keys)} pairs). "
        "SNN − ANN worst case in points: "
        + "; ".join(
            f"{name(*k)} "
            + " / ".join(_points(diffs[k][e]) for e in ev0.eps_cols)
            + p_text(stratified_mcnemar([(e.snn[k], e.ann[k]) for e in evs], ev0.eps))
            for k in keys
        )
        + f" (ε = {' / '.join(ev0.eps_cols)})."
    )


def finetuning_beats_conversion(evs: list[Evidence]) -> Optional[str]:
    per_seed = [{t["run"]: (c, t) for c, t in converted_pairs(e.all_rows)} for e in evs]
    runs = [r for r in per_seed[0] if all(r in s for s in per_seed)]
    if not runs:
        return None
    ev0 = evs[0]
    gains = {r: [100 * (e.w(s[r][1]) - e.w(s[r][0])) for e, s in zip(evs, per_seed)] for r in runs}
    clean = {r: [100 * (s[r][1]["clean"] - s[r][0]["clean"]) for s in per_seed] for r in runs}
    ps = {r: stratified_mcnemar([(s[r][1], s[r][0]) for s in per_seed], ev0.eps) for r in runs}
    better = [g > 0 for r in runs for g in gains[r]]
    # what conversion alone lost: the converted SNN's clean accuracy below its ANN's (None without that ANN)
    lost = {
        r: [
            100 * (a["clean"] - s[r][0]["clean"]) if (a := e.ann.get(_key(s[r][0]))) else None
            for e, s in zip(evs, per_seed)
        ]
        for r in runs
    }
    split = ""
    flat_lost = [x for r in runs for x in lost[r]]
    if all(x is not None for x in flat_lost):
        lossy = [b for b, x in zip(better, flat_lost) if x >= LOSSY_CONVERSION_POINTS]
        split = (
            f" Where conversion lost ≥ {LOSSY_CONVERSION_POINTS} points of the ANN's clean accuracy, fine-tuning "
            f"raised the worst case in {sum(lossy)} of {len(lossy)}; where conversion was near-lossless, in "
            f"{sum(better) - sum(lossy)} of {len(better) - len(lossy)}{' (SNN, seed) pairs' if len(evs) > 1 else ''}."
        )
    lost_text = lambda r: f" ({fmean(lost[r]):.1f})" if all(x is not None for x in lost[r]) else ""
    return (
        f"- **Adversarial fine-tuning of the SNN beats conversion alone** (test split, worst case{_every(evs)}, "
        f"and not chance): **{_directional(list(gains.values()), list(ps.values()))}** ({sum(better)} of "
        f"{len(better)} {'(SNN, seed) pairs' if len(evs) > 1 else 'SNNs'} gained). Fine-tuned − converted, worst "
        "case / clean in points (and the clean points conversion lost vs the ANN): "
        + "; ".join(f"{r} {_points(gains[r])} / {_points(clean[r])}{lost_text(r)}{p_text(ps[r])}" for r in runs)
        + "."
        + split
    )


CLAIMS: list[Callable[[list[Evidence]], Optional[str]]] = [
    sparse_close_to_dense,
    hydra_harp_beat_lwm,
    energy_ratio_grows,
    snn_at_least_as_robust_as_ann,
    finetuning_beats_conversion,
]


def claims(rows: list[Row], eps_cols: list[str]) -> str:
    """The section: each claim of ``CLAIMS`` that these runs can answer, over the seeds of the rows (``row["seed"]``;
    rows without one are one seed). Interrupted evaluations and models near chance (``answers_claims``) are left
    out, except as the collapsed LWM baseline at 99 %."""
    rows = [r for r in rows if r.get("method") != "native"]  # your own SNNs: reported beside, not in the claims
    if not eps_cols:
        return ""
    left_out = list(dict.fromkeys(r["run"] for r in rows if not answers_claims(r)))
    evs = []
    for seed in dict.fromkeys(r.get("seed") for r in rows):
        mine = [r for r in rows if r.get("seed") == seed]
        answering = [r for r in mine if answers_claims(r)]
        evs.append(
            Evidence(
                eps_cols[0],
                eps_cols,
                main_rows(answering),
                answering,
                main_rows([r for r in mine if not r.get("interrupted")]),
            )
        )
    answers = [line for claim in CLAIMS if (line := claim(evs))]
    if not answers:
        return ""
    n = min((r["samples"] for r in evs[0].rows if r.get("samples")), default=None)
    seeds = len(evs)
    noise = (
        f" With {n} samples one sample is {100 / n:.1f} points and a 95 % interval at 80 % accuracy is about "
        f"±{196 * math.sqrt(0.16 / n):.0f} points: read smaller differences as ties."
        if n
        else ""
    )
    test = (
        f" Over {seeds} seeds: each difference is the mean over seeds (each seed's in brackets); p: exact two-sided "
        "test of the two models' per-sample worst-case outcomes pooled over the seeds, stratified by seed "
        "(Cochran–Mantel–Haenszel with each matched sample a stratum, i.e. McNemar's test on the discordant samples "
        "of every seed together)."
        if seeds > 1
        else " p: exact two-sided McNemar test of the two models' per-sample worst-case outcomes."
    )
    head = (
        f"Worst-case robust accuracy at ε = {evs[0].eps} on the evaluated test samples; thresholds stated with each "
        "answer."
        + noise
        + test
        + f" A claim that one model beats another reads yes only where the effect has that sign in every seed and "
        f"p < {ALPHA:g} (where both models have per-sample records); p ≥ {ALPHA:g} means the difference could be "
        "chance."
        + (
            f" Left out (evaluation interrupted, or clean accuracy at most {CHANCE_FACTOR:g}× "
            f"chance): {', '.join(left_out)}."
            if left_out
            else ""
        )
    )
    return "\n".join(["## The paper's claims, measured", "", head, "", *answers]) + "\n"
