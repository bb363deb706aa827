"""The report's tables: one row per evaluated run, the main table, conversion vs fine-tuning, the T sweep."""

from __future__ import annotations

from typing import Any, Optional

from srsnn.pruning.registry import method
from srsnn.robustness.audit import verdict
from srsnn.robustness.cost import totals
from srsnn.robustness.reporting import pct
from srsnn.robustness.results import Check

from .seeds import over_seeds, seed_of


def build_table(runs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The main table (markdown, with its notes), one row per run (what ``report.json`` holds; over several seeds,
    ``stage.json``'s ``seed``, its numbers are the seeds' means, ``over_seeds``) and each seed's rows."""
    seeds = list(dict.fromkeys(seed_of(r) for r in runs))
    eps_cols = []
    for r in runs:
        eps_cols += [e for e in r["attacks"].eps if e not in eps_cols]
    rows = []
    for seed in seeds:
        mine = [r for r in runs if seed_of(r) == seed]
        dense_snn = next(
            (
                r
                for r in mine
                if r["attacks"].kind == "snn"
                and r["energy"].get("sparsity", {}).get("global", 1) < 1e-3
                and (r.get("stage") or {}).get("method") != "native"  # your own SNN is not the reference
            ),
            None,
        )
        rows += [dict(row_of(r, eps_cols, dense_snn), seed=seed) for r in mine]
    table = over_seeds(rows)
    return main_table(table, eps_cols) + "\n" + table_notes(runs, table) + "\n", table, rows


def row_of(r: dict[str, Any], eps_cols: list[str], dense_snn: Optional[dict[str, Any]]) -> dict[str, Any]:
    """One run's row: what it is, its accuracies per epsilon, storage, synops, energy and audit."""
    a, e, m = r["attacks"], r["energy"], r.get("stage")
    row = {
        "run": r.get("label", r["name"]),
        "kind": a.kind,
        "sparsity": e.get("sparsity", {}).get("global"),
        "method": method(m["method"]).label if m else None,
        "T": e.get("num_steps"),
        "converted_only": bool(m and m["converted_only"]),
        "samples": a.num_samples,
        "clean": a.clean_acc,
        "num_classes": a.num_classes,
        "interrupted": a.interrupted,
    }
    row["family"] = (f"{m['method']}{round(100 * m['sparsity'])}" if m["method"] else "dense") if m else None
    if m and m["method"] is None and (row["sparsity"] or 0) > 1e-3:
        row["method"] = None  # an unnamed sparse run: not "dense"
    for key in ("fit", "converted"):
        v = r.get(key) or {}
        row[f"{key}_val_acc"], row[f"{key}_val_pgd"] = v.get("acc"), v.get("pgd")
    row["fit_epochs"] = (r.get("fit") or {}).get("epochs")
    for eps in eps_cols:
        v = a.eps.get(eps)
        row[f"worst@{eps}"], row[f"paper@{eps}"] = (v.worst, v.paper_all) if v else (None, None)
    st = e.get("storage", {})
    row["weights"], row["bytes"], row["dense_bytes"] = (
        st.get("nonzero_weights"),
        st.get("compact_bytes"),
        st.get("dense_fp32_bytes"),
    )
    row["synops"] = e.get("total", {}).get("synops") if a.kind == "snn" else None
    row["spikes"] = e.get("total", {}).get("spikes") if a.kind == "snn" else None
    row["macs"] = e.get("macs") if a.kind != "snn" else e.get("first_layer_macs")
    row["energy_uj"] = e.get("energy_uj")
    if a.kind == "snn" and dense_snn is not None and row["synops"]:
        # the paper's ratio: synops of the dense SNN / synops of this SNN (first layer excluded, E_AC cancels)
        row["E_dense/E_sparse"] = dense_snn["energy"]["total"]["synops"] / max(row["synops"], 1e-12)
    row["audit"] = audit_text(a.audit)
    row["eval_s_per_sample"] = a.seconds / max(a.num_samples, 1) if a.seconds else None
    # forward + backward passes of the model per sample (None for files written before they were counted)
    row["passes_per_sample"] = sum(totals(a.passes_by_phase).values()) if a.passes_by_phase else None
    row["paper_passes_per_sample"] = sum(totals(a.passes_by_phase, "paper:").values()) if a.passes_by_phase else None
    row["robust_samples"] = r.get("robust_samples")  # for paired tests; not written to report.json
    return row


def audit_text(audit: list[Check]) -> str:
    """``pass``, ``-`` (no audit), or the failed checks (``FAIL``: the evaluation is in doubt) and the findings (the
    paper's protocol overestimating robustness: a result, not a doubt), each with its epsilons."""
    groups: dict[str, dict[str, list[str]]] = {"FAIL": {}, "FINDING": {}}
    for c in audit:
        v = verdict(c)
        if v != "PASS":
            groups[v].setdefault(c.rule or c.check, []).append(c.eps)
    if not audit:
        return "-"
    parts = [
        f"{label}: "
        + "; ".join(k + (f" (ε={', '.join(e for e in eps if e)})" if any(eps) else "") for k, eps in groups[v].items())
        for v, label in (("FAIL", "FAIL"), ("FINDING", "finding"))
        if groups[v]
    ]
    return " · ".join(parts) if parts else "pass"


def _fmt(v, as_pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if as_pct:
        return pct(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def _cell(row: dict[str, Any], key: str, as_pct: bool = False, bold: bool = False, digits: int = 0) -> str:
    """A number of the main table; over seeds, its mean with (min–max) where the seeds differ."""
    v = row.get(key)
    fmt = (lambda x: f"{x:.{digits}f}") if digits and v is not None else (lambda x: _fmt(x, as_pct=as_pct))
    text = f"**{fmt(v)}**" if bold else fmt(v)
    lo_hi = (row.get("spread") or {}).get(key)
    return text + (f" ({fmt(lo_hi[0])}–{fmt(lo_hi[1])})" if lo_hi else "")


def main_table(rows: list[dict[str, Any]], eps_cols: list[str]) -> str:
    head = (
        ["run", "kind", "sparsity %", "clean %"]
        + [f"**worst case** ε={e} %" for e in eps_cols]
        + [f"paper protocol ε={e} %" for e in eps_cols]
        + [
            "stored weights",
            "stored bytes (×dense)",
            "synops/sample",
            "E_dense/E_sparse (synops)",
            "first-layer or ANN MACs",
            "energy estimate µJ/sample",
            "eval s/sample",
            "passes/sample (paper protocol)",
            "audit",
        ]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        run = row["run"] + (f" ⚠ partial ({row['interrupted']})" if row.get("interrupted") else "")
        cell = lambda k, **kw: _cell(row, k, **kw)
        cells = [run, row["kind"], cell("sparsity", as_pct=True), cell("clean", as_pct=True)]
        cells += [cell(f"worst@{e}", as_pct=True, bold=True) for e in eps_cols]
        cells += [cell(f"paper@{e}", as_pct=True) for e in eps_cols]
        r_ = row["dense_bytes"] / row["bytes"] if row["bytes"] else None
        ratio = "" if r_ is None else f" ({r_:.1f}× smaller)" if r_ >= 1 else f" ({1 / r_:.2f}× larger)"
        passes = cell("passes_per_sample") + (
            f" ({cell('paper_passes_per_sample')})" if row.get("passes_per_sample") else ""
        )
        cells += [
            cell("weights"),
            (_fmt(row["bytes"]) + ratio) if row["bytes"] else "–",
            cell("synops"),
            cell("E_dense/E_sparse"),
            cell("macs"),
            cell("energy_uj", digits=3),
            cell("eval_s_per_sample"),
            passes,
            row["audit"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_notes(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """What the columns mean (over seeds: mean and range), and each kind's attack budgets."""
    seeds = next((r["seeds"] for r in rows if r.get("seeds")), None)
    budgets = sorted(
        {(r["attacks"].kind, r["attacks"].budget.paper, r["attacks"].budget.adaptive or "not run") for r in runs}
    )
    note = [
        "",
        *(
            [
                f"Over {len(seeds)} seeds ({', '.join(map(str, seeds))}): each number is the mean, with the lowest and "
                "highest seed in brackets where they differ; the sections below show the means, the figures of "
                "robust accuracy vs ε and per layer the first seed; each seed's row is in report.json (`per_seed`).",
                "",
            ]
            if seeds
            else []
        ),
        "**Worst case**: per sample, broken by anything the evaluation ran (the paper's protocol, the adaptive "
        "tier, Square, convergence rounds): the number to trust. **Paper protocol**: robust to every paper attack "
        "through the ensemble of gradient paths (SNN) or the network (ANN), to compare with the paper's tables; "
        "it overestimates robustness. E_dense/E_sparse: synops of the dense SNN of this report / synops of the "
        "row (first layer excluded, as the paper; the energy per accumulate cancels). Energy estimate: synops × "
        "E_AC + first-layer MACs × E_MAC (SNN) or MACs × E_MAC (ANN), E_AC 0.9 pJ, E_MAC 4.6 pJ (45 nm, "
        "Horowitz 2014): an estimate, not a measurement.",
        "",
        "Attack budgets:",
        "",
    ]
    note += [f"- {k.upper()}: paper protocol {p}; adaptive tier {ad}" for k, p, ad in budgets]
    return "\n".join(note)


def confidence_section(runs: list[dict[str, Any]]) -> str:
    """Per model and epsilon: did the worst case converge, and what would another round likely still break."""
    lines = [
        f"- {r.get('label', r['name'])}: " + "; ".join(r["attacks"].confidence) for r in runs if r["attacks"].confidence
    ]
    return (
        "\n".join(
            [
                "## Confidence of the worst case",
                "",
                "Converged: the 95 % Poisson bound on what one more check round would break, from what the rounds "
                "after the first broke (each with a new seed), is within the tolerance (docs/evaluation.md).",
                "",
            ]
            + lines
        )
        + "\n"
        if lines
        else ""
    )


def eps_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The evaluated epsilons, in table order (the ``worst@<eps>`` keys of the rows)."""
    return [k.split("@", 1)[1] for k in rows[0] if k.startswith("worst@")] if rows else []


def main_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fine-tuned rows at the dense SNN's time steps (a T sweep's other runs and the converted-only SNNs are
    reported apart)."""
    rows = [r for r in rows if not r.get("converted_only")]
    t = next((r["T"] for r in rows if r["kind"] == "snn" and r["method"] == "dense"), None)
    return [r for r in rows if r["kind"] != "snn" or t is None or r["T"] == t]


def converted_pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(converted-only, fine-tuned) SNN rows of the same ANN and T, both evaluated on the test split."""
    tuned = {
        (r["method"], r["sparsity"], r["T"]): r for r in rows if r["kind"] == "snn" and not r.get("converted_only")
    }
    return [
        (r, tuned[k]) for r in rows if r.get("converted_only") and (k := (r["method"], r["sparsity"], r["T"])) in tuned
    ]


def finetune_table(rows: list[dict[str, Any]], eps_cols: list[str]) -> str:
    """Converted-only vs fine-tuned SNNs: on the test split with the full evaluation (where the pipeline ran
    ``converted_test``), and on the validation split for every SNN (its fit's sanity check vs its last epoch)."""
    pairs = converted_pairs(rows)
    return "\n".join(_finetune_test_split(pairs, eps_cols) + _finetune_validation(rows, bool(pairs)))


def _finetune_test_split(pairs: list[tuple[dict[str, Any], dict[str, Any]]], eps_cols: list[str]) -> list[str]:
    if not pairs:
        return []
    out = [
        "## Conversion alone vs adversarial fine-tuning",
        "",
        "Test split, the same evaluation (worst case over everything run) for the converted-only SNN and the "
        "fine-tuned one.",
        "",
        "| run | T | converted clean % | fine-tuned clean % | "
        + " | ".join(f"converted worst ε={e} % | fine-tuned worst ε={e} %" for e in eps_cols)
        + " |",
        "|---" * (4 + 2 * len(eps_cols)) + "|",
    ]
    for c, t in pairs:
        out.append(
            f"| {t['run']} | {t['T']} | {pct(c['clean'])} | {pct(t['clean'])} | "
            + " | ".join(f"{pct(c[f'worst@{e}'])} | **{pct(t[f'worst@{e}'])}**" for e in eps_cols)
            + " |"
        )
    return out + [""]


def _finetune_validation(rows: list[dict[str, Any]], have_test_pairs: bool) -> list[str]:
    snns = [
        r for r in rows if r["kind"] == "snn" and r["converted_val_acc"] is not None and r["fit_val_acc"] is not None
    ]
    if not snns:
        return []
    out = [
        "## Conversion alone vs fine-tuning on the validation split (every SNN)"
        if have_test_pairs
        else "## Conversion alone vs adversarial fine-tuning (validation split)",
        "",
        "Clean and single-path PGD accuracy (the training ε, the surrogate gradient) right after conversion "
        "(the fit's sanity check) and after the last fine-tuning epoch. Single-path PGD is a weak attack on "
        "a converted SNN (its surrogate gradient is poor), so its converted numbers are upper bounds; "
        + (
            "the test-split comparison above is the one to trust."
            if have_test_pairs
            else "the pipeline's `converted_test` runs give the full comparison on the test split."
        ),
        "",
        "| run | T | epochs | converted clean % | fine-tuned clean % | converted PGD % | fine-tuned PGD % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in snns:
        out.append(
            f"| {r['run']} | {r['T']} | {r['fit_epochs']} | {pct(r['converted_val_acc'])} | "
            f"{pct(r['fit_val_acc'])} | {pct(r['converted_val_pgd'])} | {pct(r['fit_val_pgd'])} |"
        )
    return out + [""]


def t_sweeps(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """SNN runs of one pruned (or dense) ANN at several T, sorted by T."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "snn" and r.get("family") and not r.get("converted_only"):
            groups.setdefault(r["family"], []).append(r)
    return {k: sorted(v, key=lambda r: r["T"]) for k, v in groups.items() if len({r["T"] for r in v}) > 1}


def t_sweep_table(rows: list[dict[str, Any]], eps_cols: list[str]) -> str:
    out = []
    for base, rs in t_sweeps(rows).items():
        out += [
            f"## Time steps: {base} SNN at T = {', '.join(str(r['T']) for r in rs)}",
            "",
            "Each T converted from the same sparse ANN and fine-tuned alike; synops and spikes per test sample.",
            "",
            "| T | clean % | " + " | ".join(f"**worst case** ε={e} %" for e in eps_cols) + " | spikes/sample | "
            "synops/sample | first-layer MACs |",
            "|---" * (5 + len(eps_cols)) + "|",
        ]
        for r in rs:
            out.append(
                f"| {r['T']} | {pct(r['clean'])} | "
                + " | ".join(f"**{pct(r[f'worst@{e}'])}**" for e in eps_cols)
                + f" | {r['spikes']:,.0f} | {r['synops']:,.0f} | {r['macs']:,.0f} |"
            )
        out.append("")
    return "\n".join(out)
