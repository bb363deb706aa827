"""Markdown tables and plots of evaluation results (plain Python + matplotlib: no torch, no Lightning).

Used by ``callbacks.AttackEvaluation`` (one model) and ``report.py`` (a comparison of many runs).
"""

from __future__ import annotations

from srsnn.robustness.audit import verdict
from srsnn.robustness.cost import totals
from srsnn.robustness.results import Evaluation


def _bold(v: str) -> str:
    return f"**{v}**" if v == "FAIL" else v


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def budget_lines(r: Evaluation) -> list[str]:
    b = r.budget
    return [
        f"- paper protocol: {b.paper}",
        f"- adaptive tier: {b.adaptive or 'not run'}",
        f"- transfer: {b.transfer or 'not run'}",
    ] + ([f"- SNN-specific paths: {b.snn_paths}"] if b.snn_paths else [])


def attacks_markdown(r: Evaluation) -> str:
    """The evaluation of one model: worst case first, the paper's protocol beside it, the budget, the audit."""
    eps = list(r.eps)
    paper_labels = list(next(iter(r.eps.values())).paper) if eps else []
    lines = [
        f"Robust accuracy (%) on {r.num_samples} test samples, {r.kind.upper()}; clean accuracy "
        f"{pct(r.clean_acc)} %. **Worst case** = per sample, broken by anything run (the number to trust); "
        "**paper protocol** = the paper's attacks through the ensemble of gradient paths (to compare with the paper).",
        "",
    ]
    if r.interrupted:
        lines += [f"**Incomplete: {r.interrupted}.**", ""]
    lines += [
        "| eps | **worst case** | paper protocol (all attacks) | "
        + " | ".join(f"paper {l}" for l in paper_labels)
        + " | protocol overestimate (points) |",
        "|---" * (4 + len(paper_labels)) + "|",
    ]
    for e in eps:
        v = r.eps[e]
        lines.append(
            f"| {e} | **{pct(v.worst)}** | {pct(v.paper_all)} | "
            + " | ".join(pct(v.paper[l]) for l in paper_labels)
            + f" | {v.overestimate_points:.1f} |"
        )
    lines += ["", "Attack budget:", ""] + budget_lines(r)
    lines += ["", "Samples broken by each phase beyond the paper's protocol (on its survivors):", ""]
    for e in eps:
        st, rounds = r.eps[e].broken_by_phase, r.eps[e].check_rounds
        lines.append(
            f"- eps={e}: "
            + (", ".join(f"{k} {v}" for k, v in st.items()) or "none run")
            + (f" (check rounds: {', '.join(map(str, rounds))})" if rounds else "")
        )
    lines += _members_alone_lines(r.members_alone)
    if r.confidence:
        lines += ["", "Confidence:", ""] + [f"- {c}" for c in r.confidence]
    if r.audit:
        lines += ["", "Audit (FAIL: the evaluation is in doubt; FINDING: a result about the paper's protocol):", ""]
        lines += [f"- {_bold(verdict(c))}: {c.check} — {c.detail}" for c in r.audit]
    if r.zero_gradient_samples_by_path:
        lines += [
            "",
            "Samples with an all-zero input gradient, per gradient path: "
            + ", ".join(f"{k} {v}" for k, v in r.zero_gradient_samples_by_path.items()),
        ]
    lines += [f"- NOTE: {n}" for n in r.notes]
    if r.seconds is not None:
        lines += [
            "",
            f"Evaluation time: {r.seconds:.0f} s ({r.seconds / max(r.num_samples, 1):.2f} s per sample).",
        ]
    lines += _cost_lines(r.passes_by_phase)
    return "\n".join(lines) + "\n"


def _cost_lines(by_phase: dict[str, dict[str, float]]) -> list[str]:
    """The passes of the model per sample, in total, for the paper's protocol, and per phase (``cost``)."""
    if not by_phase:
        return []
    all_, paper = totals(by_phase), totals(by_phase, "paper:")
    lines = [
        "",
        f"Cost: {all_['forward']:,.0f} forward and {all_['backward']:,.0f} backward passes of the model per sample "
        f"(the paper's protocol: {paper['forward']:,.0f} and {paper['backward']:,.0f}); a pass: one sample through the "
        "model (an SNN over its T steps) or back.",
        "",
        "| phase | forward passes / sample | backward passes / sample |",
        "|---|---|---|",
    ]
    return lines + [f"| {k} | {v['forward']:,.1f} | {v['backward']:,.1f} |" for k, v in by_phase.items()]


def _members_alone_lines(alone) -> list[str]:
    """Each gradient path's own robust accuracy under the ranking attack, strongest first."""
    if not alone:
        return []
    lines = [
        "",
        f"Each gradient path alone ({alone.attack} at eps={alone.eps}, no ensemble; * = attacked by "
        "the adaptive tier, strongest first):",
        "",
        "| member | robust accuracy % |",
        "|---|---|",
    ]
    for m, acc in sorted(alone.accuracy.items(), key=lambda kv: kv[1]):
        lines.append(f"| {m}{' *' if m in alone.top_k else ''} | {pct(acc)} |")
    return lines


def plot_robust_accuracy(runs: dict[str, Evaluation], path: str) -> None:
    """Robust accuracy vs epsilon: worst case (solid) and the paper's protocol (dashed), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, (name, r) in enumerate(runs.items()):
        xs = [0.0] + [float(e) for e in r.eps]
        color = plt.cm.tab20(k % 20)
        ax.plot(xs, [r.clean_acc] + [v.worst for v in r.eps.values()], marker="o", color=color, label=f"{name}")
        ax.plot(
            xs,
            [r.clean_acc] + [v.paper_all for v in r.eps.values()],
            ls="--",
            marker=".",
            color=color,
            alpha=0.6,
        )
    ax.plot([], [], "k-", label="worst case (solid)")
    ax.plot([], [], "k--", label="paper protocol (dashed)")
    ax.set_xlabel("epsilon (pixel space)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=1 + len(runs) // 8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
