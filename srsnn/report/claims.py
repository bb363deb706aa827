"""The paper's claims (Schmolli et al., CPAL 2025), each answered yes / partly / no from the runs of a report, with
the numbers and, where both models have per-sample records, an exact McNemar p-value. Worst case at the smallest
evaluated ε unless said otherwise. Thresholds and the paper's reference numbers are data, below."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from srsnn.robustness.reporting import pct

from .per_sample import mcnemar, p_text
from .tables import converted_pairs, main_rows

CHANCE_FACTOR = 1.5  # a model with clean accuracy at most 1.5x chance (1 / classes) answers no claim about itself
CLOSE_POINTS, CLOSE_UP_TO = 5, 90  # sparse SNNs up to 90 % sparsity within 5 points of the dense SNN
FAR_POINTS, FAR_AT = 10, 99  # HYDRA / HARP at least 10 points above LWM at 99 %, clean and robust
LOSSY_CONVERSION_POINTS = 5  # conversion that loses at least 5 clean points of its ANN
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


def _verdict(oks: list[bool], partly: Optional[list[bool]] = None) -> str:
    return "yes" if all(oks) else "partly" if any(oks if partly is None else partly) else "no"


@dataclass
class Evidence:
    """The rows a claim reads: the models that answer claims (main table, and all with the converted-only ones), the
    finished baseline rows, and the worst case at ``eps``."""

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


def sparse_close_to_dense(ev: Evidence) -> Optional[str]:
    dense = ev.snn.get(("dense", 0))
    sparse = sorted((k, r) for k, r in ev.snn.items() if k[0] != "dense" and 0 < k[1] <= CLOSE_UP_TO)
    if not (dense and sparse):
        return None
    drops = [(f"{m} {p} %", 100 * (ev.w(dense) - ev.w(r)), mcnemar(dense, r, ev.eps)) for (m, p), r in sparse]
    return (
        f"- **Sparse SNN robustness stays close to the dense SNN up to {CLOSE_UP_TO} % sparsity** (within "
        f"{CLOSE_POINTS} points): **{_verdict([d <= CLOSE_POINTS for _, d, _ in drops])}**. Dense SNN "
        f"{pct(ev.w(dense))} %; drop in points: " + ", ".join(f"{n} {d:+.1f}{p_text(pv)}" for n, d, pv in drops) + "."
    )


def hydra_harp_beat_lwm(ev: Evidence) -> Optional[str]:
    low = {m: ev.snn.get((m, FAR_AT)) for m in ("HYDRA", "HARP")}
    low["LWM"] = next((r for r in ev.baseline_rows if r["kind"] == "snn" and _key(r) == ("LWM", FAR_AT)), None)
    if not all(low.values()):
        return None
    gaps = [
        g
        for m in ("HYDRA", "HARP")
        for g in (100 * (ev.w(low[m]) - ev.w(low["LWM"])), 100 * (low[m]["clean"] - low["LWM"]["clean"]))
    ]
    line = lambda m: f"{m} {pct(low[m]['clean'])} / {pct(ev.w(low[m]))}"
    return (
        f"- **At {FAR_AT} % sparsity HYDRA and HARP are far better than magnitude pruning (LWM)** (≥ {FAR_POINTS} "
        f"points, clean and robust): **{_verdict([g >= FAR_POINTS for g in gaps], [g > 0 for g in gaps])}**. SNN "
        f"clean / worst case: {line('LWM')}, {line('HYDRA')}{p_text(mcnemar(low['HYDRA'], low['LWM'], ev.eps))}, "
        f"{line('HARP')}{p_text(mcnemar(low['HARP'], low['LWM'], ev.eps))} %."
    )


def energy_ratio_grows(ev: Evidence) -> Optional[str]:
    ratios: dict[str, list[tuple[int, float]]] = {}
    for (m, p), r in sorted(ev.snn.items(), key=lambda kv: kv[0][1]):
        if m != "dense" and r.get("E_dense/E_sparse"):
            ratios.setdefault(m, []).append((p, r["E_dense/E_sparse"]))
    if not ratios:
        return None
    # each method's curve starts at the dense SNN (0 %, 1×): one sparsity level is already a trend
    grows = [all(b > a for a, b in zip([1.0] + [x for _, x in v], [x for _, x in v])) for v in ratios.values()]
    return (
        f"- **The energy ratio E_dense/E_sparse grows with sparsity** (paper: {PAPER_ENERGY_RATIO}): "
        f"**{_verdict(grows)}**. "
        + "; ".join(f"{m}: " + ", ".join(f"{p} % {x:.2f}×" for p, x in v) for m, v in ratios.items())
        + "."
    )


def snn_at_least_as_robust_as_ann(ev: Evidence) -> Optional[str]:
    pairs = [(k, ev.snn[k], ev.ann[k]) for k in sorted(ev.snn) if k in ev.ann]
    if not pairs:
        return None
    diffs = {e: [100 * (ev.w(s_, e) - ev.w(a_, e)) for _, s_, a_ in pairs] for e in ev.eps_cols}
    at_least = [d >= 0 for d in diffs[ev.eps]]
    name = lambda m, p: "dense" if m == "dense" else f"{m} {p} %"
    return (
        f"- **The SNN is at least as robust as its ANN** (worst case of each model's full evaluation: the same "
        f"attacks and budgets, the SNN's also through its surrogate gradient paths; paper, {PAPER_SNN_VS_ANN}): "
        f"**{_verdict(at_least)}** at ε = {ev.eps} ({sum(at_least)} of {len(pairs)} pairs). SNN − ANN worst case "
        "in points: "
        + "; ".join(
            f"{name(m, p)} " + " / ".join(f"{diffs[e][i]:+.1f}" for e in ev.eps_cols) + p_text(mcnemar(s_, a_, ev.eps))
            for i, ((m, p), s_, a_) in enumerate(pairs)
        )
        + f" (ε = {' / '.join(ev.eps_cols)})."
    )


def finetuning_beats_conversion(ev: Evidence) -> Optional[str]:
    pairs = converted_pairs(ev.all_rows)
    if not pairs:
        return None
    gains = [(100 * (ev.w(t) - ev.w(c)), 100 * (t["clean"] - c["clean"])) for c, t in pairs]
    better = [g > 0 for g, _ in gains]
    # what conversion alone lost: the converted SNN's clean accuracy below its ANN's (None without that ANN)
    lost = [100 * (a["clean"] - c["clean"]) if (a := ev.ann.get(_key(c))) else None for c, _ in pairs]
    split = ""
    if all(x is not None for x in lost):
        lossy = [b for b, x in zip(better, lost) if x >= LOSSY_CONVERSION_POINTS]
        split = (
            f" Where conversion lost ≥ {LOSSY_CONVERSION_POINTS} points of the ANN's clean accuracy, fine-tuning "
            f"raised the worst case in {sum(lossy)} of {len(lossy)}; where conversion was near-lossless, in "
            f"{sum(better) - sum(lossy)} of {len(pairs) - len(lossy)}."
        )
    return (
        f"- **Adversarial fine-tuning of the SNN beats conversion alone** (test split, worst case): "
        f"**{_verdict(better)}** ({sum(better)} of {len(pairs)} SNNs). Fine-tuned − converted, worst case / clean "
        "in points (and the clean points conversion lost vs the ANN): "
        + "; ".join(
            f"{t['run']} {g:+.1f} / {cl:+.1f}"
            + (f" ({x:.1f})" if x is not None else "")
            + p_text(mcnemar(t, c, ev.eps))
            for (c, t), (g, cl), x in zip(pairs, gains, lost)
        )
        + "."
        + split
    )


CLAIMS: list[Callable[[Evidence], Optional[str]]] = [
    sparse_close_to_dense,
    hydra_harp_beat_lwm,
    energy_ratio_grows,
    snn_at_least_as_robust_as_ann,
    finetuning_beats_conversion,
]


def claims(rows: list[Row], eps_cols: list[str]) -> str:
    """The section: each claim of ``CLAIMS`` that these runs can answer. Interrupted evaluations and models near
    chance (``answers_claims``) are left out, except as the collapsed LWM baseline at 99 %."""
    if not eps_cols:
        return ""
    left_out = [r["run"] for r in rows if not answers_claims(r)]
    answering = [r for r in rows if answers_claims(r)]
    ev = Evidence(
        eps_cols[0], eps_cols, main_rows(answering), answering, main_rows([r for r in rows if not r.get("interrupted")])
    )
    answers = [line for claim in CLAIMS if (line := claim(ev))]
    if not answers:
        return ""
    n = min((r["samples"] for r in ev.rows if r.get("samples")), default=None)
    noise = (
        f" With {n} samples one sample is {100 / n:.1f} points and a 95 % interval at 80 % accuracy is about "
        f"±{196 * math.sqrt(0.16 / n):.0f} points: read smaller differences as ties. p: exact two-sided McNemar "
        "test of the two models' per-sample worst-case outcomes (where both have per-sample records); "
        "p ≥ 0.05 means the difference could be chance."
        if n
        else ""
    )
    head = (
        f"Worst-case robust accuracy at ε = {ev.eps} on the evaluated test samples; thresholds stated with each "
        "answer."
        + noise
        + (
            f" Left out (evaluation interrupted, or clean accuracy at most {CHANCE_FACTOR:g}× "
            f"chance): {', '.join(left_out)}."
            if left_out
            else ""
        )
    )
    return "\n".join(["## The paper's claims, measured", "", head, "", *answers]) + "\n"
