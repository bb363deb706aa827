"""Comparison report: one paper-style table over several evaluated runs, plus plots.

    python report.py runs/pipeline/digits/*_test --out results/digits

Each run folder is a ``train.py test`` run with ``AttackEvaluation`` and ``SpikeEnergyMonitor`` (their
``evaluation/attacks.json`` and ``energy.json``; the newest version is used). Writes ``report.md``,
``report.json`` and plots (robust accuracy vs epsilon, per-layer spikes/synops, per-layer sparsity).
Robust accuracy: the per-sample worst case over everything run, with the paper's protocol beside it.
E_dense/E_sparse = synops of the dense SNN of the same report / synops of each SNN (the paper's ratio; the first
layer's analog MACs are excluded and reported apart, with a labelled pJ estimate).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any


def load_run(folder: str) -> dict[str, Any]:
    found = sorted(glob.glob(os.path.join(folder, "**", "evaluation", "attacks.json"), recursive=True), key=os.path.getmtime)
    if not found:
        raise SystemExit(f"error: no evaluation/attacks.json under {folder!r}; run `train.py test` with the "
                         "AttackEvaluation and SpikeEnergyMonitor callbacks first")
    ev = os.path.dirname(found[-1])
    run = {"name": os.path.basename(os.path.normpath(folder)), "attacks": json.load(open(found[-1]))}
    energy = os.path.join(ev, "energy.json")
    run["energy"] = json.load(open(energy)) if os.path.exists(energy) else {}
    return run


def build_table(runs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    dense_snn = next((r for r in runs if r["attacks"]["kind"] == "snn" and r["energy"].get("sparsity", {}).get("global", 1) < 1e-3), None)
    eps_cols = []
    for r in runs:
        eps_cols += [e for e in r["attacks"]["eps"] if e not in eps_cols]
    rows = []
    for r in runs:
        a, e = r["attacks"], r["energy"]
        row = {"run": r["name"], "kind": a["kind"], "sparsity": e.get("sparsity", {}).get("global"),
               "clean": a["clean_acc"]}
        for eps in eps_cols:
            v = a["eps"].get(eps, {})
            row[f"worst@{eps}"], row[f"paper@{eps}"] = v.get("worst"), v.get("paper_all")
        st = e.get("storage", {})
        row["weights"], row["bytes"], row["dense_bytes"] = st.get("nonzero_weights"), st.get("compact_bytes"), st.get("dense_fp32_bytes")
        row["synops"] = e.get("total", {}).get("synops") if a["kind"] == "snn" else None
        row["macs"] = e.get("macs") if a["kind"] != "snn" else e.get("first_layer_macs")
        row["energy_uj"] = e.get("energy_uj")
        if a["kind"] == "snn" and dense_snn is not None and row["synops"]:
            # the paper's ratio: synops of the dense SNN / synops of this SNN (first layer excluded, E_AC cancels)
            row["E_dense/E_sparse"] = dense_snn["energy"]["total"]["synops"] / max(row["synops"], 1e-12)
        audit = a.get("audit", [])
        failed: dict[str, list[str]] = {}
        for c in audit:
            if not c["passed"]:
                failed.setdefault(c.get("kind", c["check"]), []).append(c.get("eps", ""))
        row["audit"] = "-" if not audit else "pass" if not failed else "FAIL: " + "; ".join(
            k + (f" (ε={', '.join(e for e in eps if e)})" if any(eps) else "") for k, eps in failed.items())
        row["eval_s_per_sample"] = a["seconds"] / max(a["num_samples"], 1) if a.get("seconds") else None
        rows.append(row)

    def fmt(v, pct=False):
        if v is None:
            return "–"
        if isinstance(v, str):
            return v
        if pct:
            return f"{100 * v:.1f}"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"

    head = ["run", "kind", "sparsity %", "clean %"] + [f"**worst case** ε={e} %" for e in eps_cols] + \
           [f"paper protocol ε={e} %" for e in eps_cols] + \
           ["stored weights", "stored bytes (×dense)", "synops/sample", "E_dense/E_sparse (synops)",
            "first-layer or ANN MACs", "energy estimate µJ/sample", "eval s/sample", "audit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["run"], row["kind"], fmt(row["sparsity"], True), fmt(row["clean"], True)]
        cells += [f"**{fmt(row[f'worst@{e}'], True)}**" for e in eps_cols]
        cells += [fmt(row[f"paper@{e}"], True) for e in eps_cols]
        ratio = f" ({row['dense_bytes'] / row['bytes']:.1f}× smaller)" if row["bytes"] else ""
        cells += [fmt(row["weights"]), (fmt(row["bytes"]) + ratio) if row["bytes"] else "–", fmt(row["synops"]),
                  fmt(row.get("E_dense/E_sparse")), fmt(row["macs"]),
                  f"{row['energy_uj']:.3f}" if row["energy_uj"] is not None else "–",
                  f"{row['eval_s_per_sample']:.2f}" if row["eval_s_per_sample"] is not None else "–", row["audit"]]
        lines.append("| " + " | ".join(cells) + " |")
    budgets = sorted({(r["attacks"]["kind"], r["attacks"]["budget"]["paper"], r["attacks"]["budget"]["adaptive"] or "not run")
                      for r in runs})
    note = ["", "**Worst case**: per sample, broken by anything the evaluation ran (the paper's protocol, the adaptive "
            "tier, Square, convergence rounds): the number to trust. **Paper protocol**: robust to every paper attack "
            "through the ensemble of gradient paths (SNN) or the network (ANN), to compare with the paper's tables; "
            "it overestimates robustness. E_dense/E_sparse: synops of the dense SNN of this report / synops of the "
            "row (first layer excluded, as the paper; the energy per accumulate cancels). Energy estimate: synops × "
            "E_AC + first-layer MACs × E_MAC (SNN) or MACs × E_MAC (ANN), E_AC 0.9 pJ, E_MAC 4.6 pJ (45 nm, "
            "Horowitz 2014): an estimate, not a measurement.", "", "Attack budgets:", ""]
    note += [f"- {k.upper()}: paper protocol {p}; adaptive tier {ad}" for k, p, ad in budgets]
    return "\n".join(lines) + "\n" + "\n".join(note) + "\n", rows


def plots(runs: list[dict[str, Any]], out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nets.reporting import plot_robust_accuracy

    paths = [os.path.join(out, "robust_accuracy_vs_eps.png")]
    plot_robust_accuracy({r["name"]: r["attacks"] for r in runs}, paths[0])
    snns = [r for r in runs if r["attacks"]["kind"] == "snn" and r["energy"].get("layers")]
    panels = [("spikes / sample", "spikes", snns), ("synops / sample", "synops", snns)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, key, rs) in zip(axes, panels):
        for i, r in enumerate(rs):
            layers = list(r["energy"]["layers"])
            ax.bar([j + i * 0.8 / max(len(rs), 1) for j in range(len(layers))],
                   [r["energy"]["layers"][l][key] for l in layers], width=0.8 / max(len(rs), 1), label=r["name"])
            ax.set_xticks(range(len(layers)), layers, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    for i, r in enumerate(runs):
        sp = {k: v for k, v in r["energy"].get("sparsity", {}).items() if k != "global"}
        axes[2].plot(range(len(sp)), list(sp.values()), marker="o", label=r["name"])
        axes[2].set_xticks(range(len(sp)), list(sp), fontsize=7)
    axes[2].set_title("per-layer sparsity", fontsize=9)
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    paths.append(os.path.join(out, "layers.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of `train.py test` runs")
    p.add_argument("--out", required=True, help="folder for report.md, report.json and the plots")
    p.add_argument("--title", default="Comparison")
    a = p.parse_args(argv)
    runs = [load_run(r) for r in a.runs]
    os.makedirs(a.out, exist_ok=True)
    table, rows = build_table(runs)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(f"# {a.title}\n\n{table}")
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(rows, f, indent=2)
    figs = plots(runs, a.out)
    print(table)
    print(f"wrote {a.out}/report.md, report.json, " + ", ".join(os.path.basename(x) for x in figs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
