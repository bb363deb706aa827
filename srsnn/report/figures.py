"""The report's figures, one function each; each returns the path it wrote (or None when the runs lack its data)."""

from __future__ import annotations

import os
from typing import Any, Optional

from srsnn.pruning.registry import color_of

from .tables import eps_columns, main_rows, t_sweeps

Row = dict[str, Any]


def _color(label: Optional[str]) -> str:
    return color_of(label)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=130, bbox_inches="tight")  # tight: legends placed outside the axes are kept
    _plt().close(fig)
    return path


def plots(runs: list[dict[str, Any]], rows: list[Row], out: str) -> list[str]:
    """Every figure the runs have data for, written to ``out``."""
    from srsnn.robustness.reporting import plot_robust_accuracy

    _plt()
    first = os.path.join(out, "robust_accuracy_vs_eps.png")
    plot_robust_accuracy({r["name"]: r["attacks"] for r in runs}, first)
    eps, main = eps_columns(rows), main_rows(rows)
    made = [
        robust_vs_sparsity(main, eps, out),
        robust_vs_energy(main, eps, out),
        layers(runs, main, out),
        t_sweep(rows, eps, out),
    ]
    return [first] + [p for p in made if p]


def robust_vs_sparsity(main: list[Row], eps: list[str], out: str) -> Optional[str]:
    """Robust accuracy vs sparsity, one line per method and kind (dense shared), one panel per epsilon."""
    methods = [m for m in dict.fromkeys(r["method"] for r in main) if m not in (None, "dense", "native")]
    if not (methods and eps):
        return None
    plt = _plt()
    keys = ["clean"] + [f"worst@{e}" for e in eps]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), sharey=True)
    levels = sorted({round(100 * (r["sparsity"] or 0)) for r in main if r["method"] in methods})
    xpos = {p: i + 1 for i, p in enumerate(levels)} | {0: 0}
    for ax, key in zip(axes, keys):
        for kind, ls, mk in (("snn", "-", "o"), ("ann", "--", "s")):
            dense = next((r for r in main if r["kind"] == kind and r["method"] == "dense"), None)
            for m in methods:
                pts = sorted(
                    (round(100 * (r["sparsity"] or 0)), r[key]) for r in main if r["kind"] == kind and r["method"] == m
                )
                pts = ([(0, dense[key])] if dense else []) + pts
                ax.plot(
                    [xpos[p] for p, _ in pts],
                    [100 * v for _, v in pts],
                    ls=ls,
                    marker=mk,
                    color=_color(m),
                    label=f"{m} {kind.upper()}",
                    alpha=1 if kind == "snn" else 0.55,
                )
        ax.set_xticks(list(xpos.values()), ["dense" if p == 0 else f"{p} %" for p in xpos])
        ax.set_title("clean" if key == "clean" else f"worst case, ε = {key.split('@')[1]}", fontsize=9)
        ax.set_xlabel("sparsity (fraction of weights pruned)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy %")
    axes[-1].legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="solid SNN, dashed ANN", title_fontsize=7
    )
    return _save(fig, os.path.join(out, "robust_vs_sparsity.png"))


def _frontier(snns: list[Row], e: str) -> list[Row]:
    """Non-dominated SNNs at ``e``: no cheaper-or-equal SNN is more robust."""
    front, best = [], -1.0
    for r in sorted(snns, key=lambda r: -r["E_dense/E_sparse"]):
        if r[f"worst@{e}"] > best:
            front.append(r)
            best = r[f"worst@{e}"]
    return front


def robust_vs_energy(main: list[Row], eps: list[str], out: str) -> Optional[str]:
    """The trade-off frontier: worst-case robust accuracy vs E_dense/E_sparse of every SNN."""
    snns = [r for r in main if r["kind"] == "snn" and r.get("E_dense/E_sparse") and r["method"] != "native"]
    if len(snns) < 2 or not eps:
        return None
    fig, axes = _plt().subplots(1, len(eps), figsize=(4.2 * len(eps), 3.6), sharey=True, squeeze=False)
    for ax, e in zip(axes[0], eps):
        for r in snns:
            x, y = r["E_dense/E_sparse"], 100 * r[f"worst@{e}"]
            ax.scatter([x], [y], color=_color(r["method"]), s=30, zorder=3)
            ax.annotate(
                f"{round(100 * (r['sparsity'] or 0))} %" if r["method"] != "dense" else "dense",
                (x, y),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
            )
        front = _frontier(snns, e)
        ax.plot(
            [r["E_dense/E_sparse"] for r in front],
            [100 * r[f"worst@{e}"] for r in front],
            color="gray",
            ls=":",
            zorder=1,
            label="frontier",
        )
        ax.set_xscale("log")
        ax.set_xlabel("E_dense / E_sparse (synops ratio, log)", fontsize=8)
        ax.set_title(f"worst case, ε = {e}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("robust accuracy %")
    for m in dict.fromkeys(r["method"] for r in snns):
        axes[0][-1].scatter([], [], color=_color(m), label=m or "other")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(fig, os.path.join(out, "robust_vs_energy.png"))


def layers(runs: list[dict[str, Any]], main: list[Row], out: str) -> str:
    """Per-layer spikes, synops (SNNs) and pruned fraction (ANNs) by layer name: one line per run."""
    by_name = {r["name"]: r for r in runs}
    layered = [(row, by_name[row["run"]]) for row in main if by_name[row["run"]]["energy"].get("layers")]
    fig, axes = _plt().subplots(1, 3, figsize=(14, 3.8))
    styles = ["-", "--", ":", "-."]
    for i, (row, r) in enumerate(layered):
        en = r["energy"]
        lab, names = en.get("labels", {}), list(en["layers"])
        style = dict(color=_color(row["method"]), ls=styles[i % len(styles)], marker="o", ms=3, label=r["name"])
        axes[0].plot([lab.get(n, n) for n in names], [en["layers"][n]["spikes"] for n in names], **style)
        syn = en.get("synops_by_layer") or en["layers"]  # per weight layer fed spikes (older files: per neuron layer)
        axes[1].plot([lab.get(n, n) for n in syn], [syn[n]["synops"] for n in syn], **style)
    for row in main:
        en = by_name[row["run"]]["energy"]
        sp = {k: v for k, v in en.get("sparsity", {}).items() if k != "global"}
        if row["kind"] == "ann" and sp:
            lab = en.get("labels", {})
            axes[2].plot(
                [lab.get(n, n) for n in sp],
                [100 * v for v in sp.values()],
                color=_color(row["method"]),
                marker="o",
                ms=3,
                label=row["run"],
            )
    for ax, title in zip(axes, ("spikes / sample (SNN)", "synops / sample (SNN)", "weights pruned % (per layer)")):
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=45)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.set_yscale("log")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=1 + len(ax.get_legend_handles_labels()[0]) // 12)
    return _save(fig, os.path.join(out, "layers.png"))


def t_sweep(rows: list[Row], eps: list[str], out: str) -> Optional[str]:
    """Clean and worst-case accuracy vs synops of each T sweep."""
    sweeps = t_sweeps(rows)
    if not (sweeps and eps):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for base, rs in sweeps.items():
        xs = [r["synops"] for r in rs]
        ax.plot(xs, [100 * r["clean"] for r in rs], "k--", marker="s", ms=4, label=f"{base}: clean")
        for j, e in enumerate(eps):
            ys = [100 * r[f"worst@{e}"] for r in rs]
            ax.plot(xs, ys, marker="o", color=plt.cm.viridis(j / max(len(eps), 2)), label=f"{base}: worst case ε = {e}")
        for r in rs:
            ax.annotate(
                f"T={r['T']}", (r["synops"], 100 * r["clean"]), textcoords="offset points", xytext=(3, 4), fontsize=7
            )
    ax.set_xscale("log")
    ax.set_xlabel("synops / sample (log)")
    ax.set_ylabel("accuracy %")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(fig, os.path.join(out, "t_sweep.png"))
