"""Comparison report: one paper-style table over several evaluated runs, plus plots.

    python report.py runs/pipeline/digits/*_test --out results/digits
    python report.py compare <run>/evaluation/per_sample.json theirs.json     # a second opinion, per sample

Each run folder is a ``train.py test`` run with ``AttackEvaluation`` and ``SpikeEnergyMonitor`` (their
``evaluation/attacks.json`` and ``energy.json``; the newest version is used). Where the pipeline's sibling folders
exists (``<run>`` without ``_test``: the fit), its last validation metrics and, for an SNN, the converted SNN's
before fine-tuning are read too. Runs named ``<method><percent>_...`` (``hydra90_snn_test``) are grouped by pruning
method and sparsity, ``..._T<k>_...`` by time steps. Writes ``report.md`` (the table, conversion vs fine-tuning,
the T sweep and the paper's claims each with its measured answer), ``report.json`` and figures: robust accuracy
vs epsilon, vs sparsity per method, vs E_dense/E_sparse (the trade-off frontier), per-layer spikes / synops /
sparsity by layer name, and the T sweep.
Robust accuracy: the per-sample worst case over everything run, with the paper's protocol beside it.
E_dense/E_sparse = synops of the dense SNN of the same report / synops of each SNN (the paper's ratio; the first
layer's analog MACs are excluded and reported apart, with a labelled pJ estimate).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from typing import Any, Optional

from nets.reporting import pct
from nets.runs import files_under

NAME = re.compile(r"^(?:(?P<method>[a-z]+?)(?P<pct>\d+)_)?(?:T(?P<T>\d+)_)?(?P<kind>ann|snn)(?P<converted>_converted)?_test$")
METHODS = {"lwm": "LWM", "hydra": "HYDRA", "harp": "HARP", "channels": "channels", None: "dense"}


def load_run(folder: str) -> dict[str, Any]:
    found = files_under(folder, "evaluation", "attacks.json")
    if not found:
        raise SystemExit(f"error: no evaluation/attacks.json under {folder!r}; run `train.py test` with the "
                         "AttackEvaluation and SpikeEnergyMonitor callbacks first")
    ev = os.path.dirname(found[-1])
    run = {"name": os.path.basename(os.path.normpath(folder)), "attacks": json.load(open(found[-1]))}
    run["stage"] = stage_info(folder, run["name"])
    energy = os.path.join(ev, "energy.json")
    run["energy"] = json.load(open(energy)) if os.path.exists(energy) else {}
    per_sample = os.path.join(ev, "per_sample.json")
    run["robust_samples"] = _robust_samples(per_sample) if os.path.exists(per_sample) else None
    base = os.path.normpath(folder)[:-len("_test")] if os.path.normpath(folder).endswith("_test") else None
    run["fit"], run["converted"] = last_validation(base) if base else (None, None)
    return run


def stage_info(folder: str, name: str) -> Optional[dict[str, Any]]:
    """What a run is (pruning method or None for dense, sparsity, T, converted only): the ``stage.json`` a pipeline
    stage writes; for a run outside a pipeline, read from a folder named like a pipeline stage; else None."""
    path = os.path.join(folder, "stage.json")
    if os.path.exists(path):
        return json.load(open(path))
    m = NAME.match(name)
    return {"method": m["method"], "sparsity": int(m["pct"]) / 100 if m["pct"] else 0.0,
            "T": int(m["T"]) if m["T"] else None, "converted_only": bool(m["converted"])} if m else None


def _robust_samples(path: str) -> dict[str, list[int]]:
    """Per epsilon, the indices of the samples robust in the worst case (``per_sample.json``)."""
    clean, broken = _broken(path)
    return {eps: sorted(i for i, c in clean.items() if c and i not in b) for eps, b in broken.items()}


def mcnemar(a: dict[str, Any], b: dict[str, Any], eps: str) -> Optional[float]:
    """Exact two-sided McNemar p-value of two models' worst-case outcomes on the same samples at ``eps`` (None
    without per-sample records): of the samples on which they differ, is one model robust more often than chance?"""
    ra, rb = (r.get("robust_samples") or {} for r in (a, b))
    if eps not in ra or eps not in rb or a.get("samples") != b.get("samples"):
        return None
    x, y = set(ra[eps]), set(rb[eps])
    n, k = len(x ^ y), min(len(x - y), len(y - x))
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def _p(p: Optional[float]) -> str:
    return "" if p is None else f", p = {p:.2g}" if p >= 0.001 else ", p < 0.001"


def last_validation(folder: str) -> tuple[Optional[dict[str, Any]], Optional[dict[str, float]]]:
    """The last logged validation metrics of a fit (``val/acc``, ``val/pgd_acc_single_path``, epochs) and the
    converted SNN's before fine-tuning (``converted/val_acc``, ``converted/val_pgd_acc``, logged by ``ConvertedSNN``
    from the sanity check) under a run folder, over all its logs (a resumed fit logs to a new version folder);
    None where not logged."""
    rows = []
    for path in files_under(folder, "metrics.csv"):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    num = lambda v: float(v) if v not in (None, "") else None
    val = [r for r in rows if r.get("val/acc")]
    fit = {"acc": num(val[-1]["val/acc"]), "pgd": num(val[-1].get("val/pgd_acc_single_path")),
           "epochs": int(val[-1]["epoch"]) + 1 if val[-1].get("epoch") else None} if val else None
    conv = next(({"acc": num(r["converted/val_acc"]), "pgd": num(r.get("converted/val_pgd_acc"))}
                 for r in rows if r.get("converted/val_acc")), None)
    return fit, conv


def build_table(runs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    dense_snn = next((r for r in runs if r["attacks"]["kind"] == "snn" and r["energy"].get("sparsity", {}).get("global", 1) < 1e-3), None)
    eps_cols = []
    for r in runs:
        eps_cols += [e for e in r["attacks"]["eps"] if e not in eps_cols]
    rows = []
    for r in runs:
        a, e = r["attacks"], r["energy"]
        m = r.get("stage")
        row = {"run": r.get("label", r["name"]), "kind": a["kind"], "sparsity": e.get("sparsity", {}).get("global"),
               "method": METHODS.get(m["method"], m["method"]) if m else None, "T": e.get("num_steps"),
               "converted_only": bool(m and m["converted_only"]), "samples": a.get("num_samples"), "clean": a["clean_acc"],
               "num_classes": a.get("num_classes"), "interrupted": a.get("interrupted")}
        row["family"] = (f"{m['method']}{round(100 * m['sparsity'])}" if m["method"] else "dense") if m else None
        if m and m["method"] is None and (row["sparsity"] or 0) > 1e-3:
            row["method"] = None  # an unnamed sparse run: not "dense"
        for key in ("fit", "converted"):
            v = r.get(key) or {}
            row[f"{key}_val_acc"], row[f"{key}_val_pgd"] = v.get("acc"), v.get("pgd")
        row["fit_epochs"] = (r.get("fit") or {}).get("epochs")
        for eps in eps_cols:
            v = a["eps"].get(eps, {})
            row[f"worst@{eps}"], row[f"paper@{eps}"] = v.get("worst"), v.get("paper_all")
        st = e.get("storage", {})
        row["weights"], row["bytes"], row["dense_bytes"] = st.get("nonzero_weights"), st.get("compact_bytes"), st.get("dense_fp32_bytes")
        row["synops"] = e.get("total", {}).get("synops") if a["kind"] == "snn" else None
        row["spikes"] = e.get("total", {}).get("spikes") if a["kind"] == "snn" else None
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
        row["robust_samples"] = r.get("robust_samples")  # for paired tests; not written to report.json
        rows.append(row)

    def fmt(v, as_pct=False):
        if v is None:
            return "–"
        if isinstance(v, str):
            return v
        if as_pct:
            return pct(v)
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"

    head = ["run", "kind", "sparsity %", "clean %"] + [f"**worst case** ε={e} %" for e in eps_cols] + \
           [f"paper protocol ε={e} %" for e in eps_cols] + \
           ["stored weights", "stored bytes (×dense)", "synops/sample", "E_dense/E_sparse (synops)",
            "first-layer or ANN MACs", "energy estimate µJ/sample", "eval s/sample", "audit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        run = row["run"] + (f" ⚠ partial ({row['interrupted']})" if row.get("interrupted") else "")
        cells = [run, row["kind"], fmt(row["sparsity"], as_pct=True), fmt(row["clean"], as_pct=True)]
        cells += [f"**{fmt(row[f'worst@{e}'], as_pct=True)}**" for e in eps_cols]
        cells += [fmt(row[f"paper@{e}"], as_pct=True) for e in eps_cols]
        r_ = row["dense_bytes"] / row["bytes"] if row["bytes"] else None
        ratio = "" if r_ is None else f" ({r_:.1f}× smaller)" if r_ >= 1 else f" ({1 / r_:.2f}× larger)"
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


def confidence_section(runs: list[dict[str, Any]]) -> str:
    """Per model and epsilon: did the worst case converge, and what would another round likely still break."""
    lines = [f"- {r.get('label', r['name'])}: " + "; ".join(r["attacks"]["confidence"]) for r in runs
             if r["attacks"].get("confidence")]
    return "\n".join(["## Confidence of the worst case", "", "Two consecutive check rounds (2x steps, new seed) that "
                      "break nothing = converged; otherwise the last productive round's breaks are what another round "
                      "would likely still find.", ""] + lines) + "\n" if lines else ""


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
    tuned = {(r["method"], r["sparsity"], r["T"]): r for r in rows if r["kind"] == "snn" and not r.get("converted_only")}
    return [(r, tuned[k]) for r in rows if r.get("converted_only") and (k := (r["method"], r["sparsity"], r["T"])) in tuned]


def finetune_table(rows: list[dict[str, Any]], eps_cols: list[str]) -> str:
    """Converted-only vs fine-tuned SNNs: on the test split with the full evaluation (where the pipeline ran
    ``converted_test``), and on the validation split for every SNN (its fit's sanity check vs its last epoch)."""
    out = []
    pairs = converted_pairs(rows)
    if pairs:
        out += ["## Conversion alone vs adversarial fine-tuning", "",
                "Test split, the same evaluation (worst case over everything run) for the converted-only SNN and the "
                "fine-tuned one.", "",
                "| run | T | converted clean % | fine-tuned clean % | " + " | ".join(
                    f"converted worst ε={e} % | fine-tuned worst ε={e} %" for e in eps_cols) + " |",
                "|---" * (4 + 2 * len(eps_cols)) + "|"]
        for c, t in pairs:
            out.append(f"| {t['run']} | {t['T']} | {pct(c['clean'])} | {pct(t['clean'])} | " + " | ".join(
                f"{pct(c[f'worst@{e}'])} | **{pct(t[f'worst@{e}'])}**" for e in eps_cols) + " |")
        out.append("")
    snns = [r for r in rows if r["kind"] == "snn" and r["converted_val_acc"] is not None and r["fit_val_acc"] is not None]
    if snns:
        out += ["## Conversion alone vs fine-tuning on the validation split (every SNN)" if pairs else
                "## Conversion alone vs adversarial fine-tuning (validation split)", "",
                "Clean and single-path PGD accuracy (the training ε, the surrogate gradient) right after conversion "
                "(the fit's sanity check) and after the last fine-tuning epoch. Single-path PGD is a weak attack on "
                "a converted SNN (its surrogate gradient is poor), so its converted numbers are upper bounds; "
                + ("the test-split comparison above is the one to trust." if pairs else
                   "the pipeline's `converted_test` runs give the full comparison on the test split."), "",
                "| run | T | epochs | converted clean % | fine-tuned clean % | converted PGD % | fine-tuned PGD % |",
                "|---|---|---|---|---|---|---|"]
        for r in snns:
            out.append(f"| {r['run']} | {r['T']} | {r['fit_epochs']} | {pct(r['converted_val_acc'])} | "
                       f"{pct(r['fit_val_acc'])} | {pct(r['converted_val_pgd'])} | {pct(r['fit_val_pgd'])} |")
        out.append("")
    return "\n".join(out)


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
        out += [f"## Time steps: {base} SNN at T = {', '.join(str(r['T']) for r in rs)}", "",
                "Each T converted from the same sparse ANN and fine-tuned alike; synops and spikes per test sample.", "",
                "| T | clean % | " + " | ".join(f"**worst case** ε={e} %" for e in eps_cols) + " | spikes/sample | "
                "synops/sample | first-layer MACs |", "|---" * (5 + len(eps_cols)) + "|"]
        for r in rs:
            out.append(f"| {r['T']} | {pct(r['clean'])} | " + " | ".join(f"**{pct(r[f'worst@{e}'])}**" for e in eps_cols)
                       + f" | {r['spikes']:,.0f} | {r['synops']:,.0f} | {r['macs']:,.0f} |")
        out.append("")
    return "\n".join(out)


CHANCE_FACTOR = 1.5  # a model with clean accuracy at most 1.5x chance (1 / classes) answers no claim about itself


def answers_claims(row: dict[str, Any]) -> bool:
    """A model whose evaluation finished and that is clearly above chance: only such models answer a claim (a
    collapsed model is still the baseline that HYDRA/HARP are compared with at 99 %)."""
    chance = 1 / (row.get("num_classes") or 10)
    return not row.get("interrupted") and (row["clean"] or 0) > CHANCE_FACTOR * chance


def claims(rows: list[dict[str, Any]], eps_cols: list[str]) -> str:
    """The paper's claims, each with its answer from these runs (yes / partly / no, with the numbers), worst case
    at the smallest evaluated ε unless said otherwise. Interrupted evaluations and models near chance
    (``answers_claims``) are left out, except as the collapsed LWM baseline at 99 %."""
    if not eps_cols:
        return ""
    e = eps_cols[0]
    left_out = [r["run"] for r in rows if not answers_claims(r)]
    baseline_rows = main_rows([r for r in rows if not r.get("interrupted")])
    rows = [r for r in rows if answers_claims(r)]
    all_rows, rows = rows, main_rows(rows)
    run_key = lambda r: (r["method"], round(100 * (r["sparsity"] or 0)))  # (method, sparsity %)
    snn = {run_key(r): r for r in rows if r["kind"] == "snn" and r["method"]}
    ann = {run_key(r): r for r in rows if r["kind"] == "ann" and r["method"]}
    w = lambda r: r[f"worst@{e}"]
    n = min((r["samples"] for r in rows if r.get("samples")), default=None)
    noise = (f" With {n} samples one sample is {100 / n:.1f} points and a 95 % interval at 80 % accuracy is about "
             f"±{196 * math.sqrt(0.16 / n):.0f} points: read smaller differences as ties. p: exact two-sided McNemar "
             "test of the two models' per-sample worst-case outcomes (where both have per-sample records); "
             "p ≥ 0.05 means the difference could be chance." if n else "")
    out = ["## The paper's claims, measured", "",
           f"Worst-case robust accuracy at ε = {e} on the evaluated test samples; thresholds stated with each answer."
           + noise + (f" Left out (evaluation interrupted, or clean accuracy at most {CHANCE_FACTOR:g}× chance): "
                      f"{', '.join(left_out)}." if left_out else ""), ""]
    dense = snn.get(("dense", 0))
    sparse = sorted((k, r) for k, r in snn.items() if k[0] != "dense" and 0 < k[1] <= 90)
    if dense and sparse:
        drops = [(f"{m} {p} %", 100 * (w(dense) - w(r)), mcnemar(dense, r, e)) for (m, p), r in sparse]
        close = [d <= 5 for _, d, _ in drops]
        verdict = "yes" if all(close) else "partly" if any(close) else "no"
        out.append(f"- **Sparse SNN robustness stays close to the dense SNN up to 90 % sparsity** (within 5 points): "
                   f"**{verdict}**. Dense SNN {pct(w(dense))} %; drop in points: "
                   + ", ".join(f"{n} {d:+.1f}{_p(pv)}" for n, d, pv in drops) + ".")
    low = {m: snn.get((m, 99)) for m in ("HYDRA", "HARP")}
    low["LWM"] = next((r for r in baseline_rows if r["kind"] == "snn" and run_key(r) == ("LWM", 99)), None)
    if all(low.values()):
        gaps = {m: (100 * (w(low[m]) - w(low["LWM"])), 100 * (low[m]["clean"] - low["LWM"]["clean"]))
                for m in ("HYDRA", "HARP")}
        big = [g >= 10 for pair in gaps.values() for g in pair]
        verdict = "yes" if all(big) else "partly" if any(g > 0 for pair in gaps.values() for g in pair) else "no"
        out.append(f"- **At 99 % sparsity HYDRA and HARP are far better than magnitude pruning (LWM)** (≥ 10 points, "
                   f"clean and robust): **{verdict}**. SNN clean / worst case: LWM {pct(low['LWM']['clean'])} / "
                   f"{pct(w(low['LWM']))}, HYDRA {pct(low['HYDRA']['clean'])} / {pct(w(low['HYDRA']))}"
                   f"{_p(mcnemar(low['HYDRA'], low['LWM'], e))}, HARP {pct(low['HARP']['clean'])} / "
                   f"{pct(w(low['HARP']))}{_p(mcnemar(low['HARP'], low['LWM'], e))} %.")
    ratios = {}
    for (m, p), r in sorted(snn.items(), key=lambda kv: kv[0][1]):
        if m != "dense" and r.get("E_dense/E_sparse"):
            ratios.setdefault(m, []).append((p, r["E_dense/E_sparse"]))
    if ratios:
        # each method's curve starts at the dense SNN (0 %, 1×): one sparsity level is already a trend
        grows = [all(b > a for a, b in zip([1.0] + [x for _, x in v], [x for _, x in v])) for v in ratios.values()]
        verdict = "yes" if all(grows) else "partly" if any(grows) else "no"
        out.append(f"- **The energy ratio E_dense/E_sparse grows with sparsity** (paper: 8.61× for HARP 99 % on "
                   f"CIFAR-10): **{verdict}**. " + "; ".join(f"{m}: " + ", ".join(f"{p} % {x:.2f}×" for p, x in v)
                                                           for m, v in ratios.items()) + ".")
    pairs = [(k, snn[k], ann[k]) for k in sorted(snn) if k in ann]
    if pairs:
        diffs = {ee: [100 * (s_[f"worst@{ee}"] - a_[f"worst@{ee}"]) for _, s_, a_ in pairs] for ee in eps_cols}
        at_least = [d >= 0 for d in diffs[e]]
        verdict = "yes" if all(at_least) else "partly" if any(at_least) else "no"
        out.append(f"- **The SNN is at least as robust as its ANN** (worst case of each model's full evaluation: the "
                   f"same attacks and budgets, the SNN's also through its surrogate gradient paths; paper, HYDRA 90 %, "
                   f"Square-5000 at 8/255: SNN 36.3 vs ANN 32.7): **{verdict}** at ε = {e} ({sum(at_least)} of "
                   f"{len(pairs)} pairs). SNN − ANN worst case in points: " + "; ".join(
                       f"{'dense' if m == 'dense' else f'{m} {p} %'} " + " / ".join(f"{diffs[ee][i]:+.1f}" for ee in eps_cols)
                       + _p(mcnemar(s_, a_, e)) for i, ((m, p), s_, a_) in enumerate(pairs)) + f" (ε = {' / '.join(eps_cols)}).")
    pairs = converted_pairs(all_rows)
    if pairs:
        gains = [(100 * (t[f"worst@{e}"] - c[f"worst@{e}"]), 100 * (t["clean"] - c["clean"])) for c, t in pairs]
        better = [g > 0 for g, _ in gains]
        verdict = "yes" if all(better) else "partly" if any(better) else "no"
        # what conversion alone lost: the converted SNN's clean accuracy below its ANN's (None without that ANN)
        lost = [100 * (a["clean"] - c["clean"]) if (a := ann.get(run_key(c)))
                else None for c, _ in pairs]
        split = ""
        if all(x is not None for x in lost):
            lossy = [b for b, x in zip(better, lost) if x >= 5]
            split = (f" Where conversion lost ≥ 5 points of the ANN's clean accuracy, fine-tuning raised the worst case "
                     f"in {sum(lossy)} of {len(lossy)}; where conversion was near-lossless, in "
                     f"{sum(better) - sum(lossy)} of {len(pairs) - len(lossy)}.")
        out.append(f"- **Adversarial fine-tuning of the SNN beats conversion alone** (test split, worst case): "
                   f"**{verdict}** ({sum(better)} of {len(pairs)} SNNs). Fine-tuned − converted, worst case / clean "
                   "in points (and the clean points conversion lost vs the ANN): " + "; ".join(
                       f"{t['run']} {g:+.1f} / {cl:+.1f}" + (f" ({x:.1f})" if x is not None else "") + _p(mcnemar(t, c, e))
                       for (c, t), (g, cl), x in zip(pairs, gains, lost)) + "." + split)
    return "\n".join(out) + "\n" if len(out) > 4 else ""


COLORS = {"dense": "black", "LWM": "tab:red", "HYDRA": "tab:blue", "HARP": "tab:green", "channels": "tab:purple"}


def _color(method: Optional[str]) -> str:
    return COLORS.get(method or "", "tab:gray")


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=130, bbox_inches="tight")  # tight: legends placed outside the axes are kept
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def plots(runs: list[dict[str, Any]], rows: list[dict[str, Any]], out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nets.reporting import plot_robust_accuracy

    paths = [os.path.join(out, "robust_accuracy_vs_eps.png")]
    plot_robust_accuracy({r["name"]: r["attacks"] for r in runs}, paths[0])
    eps = eps_columns(rows)
    main = main_rows(rows)

    # robust accuracy vs sparsity, one line per method and kind (dense shared), one panel per epsilon
    methods = [m for m in dict.fromkeys(r["method"] for r in main) if m not in (None, "dense")]
    if methods and eps:
        keys = ["clean"] + [f"worst@{e}" for e in eps]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), sharey=True)
        levels = sorted({round(100 * (r["sparsity"] or 0)) for r in main if r["method"] in methods})
        xpos = {p: i + 1 for i, p in enumerate(levels)} | {0: 0}
        for ax, key in zip(axes, keys):
            for kind, ls, mk in (("snn", "-", "o"), ("ann", "--", "s")):
                dense = next((r for r in main if r["kind"] == kind and r["method"] == "dense"), None)
                for m in methods:
                    pts = sorted((round(100 * (r["sparsity"] or 0)), r[key]) for r in main if r["kind"] == kind and r["method"] == m)
                    pts = ([(0, dense[key])] if dense else []) + pts
                    ax.plot([xpos[p] for p, _ in pts], [100 * v for _, v in pts], ls=ls, marker=mk, color=_color(m),
                            label=f"{m} {kind.upper()}", alpha=1 if kind == "snn" else 0.55)
            ax.set_xticks(list(xpos.values()), ["dense" if p == 0 else f"{p} %" for p in xpos])
            ax.set_title("clean" if key == "clean" else f"worst case, ε = {key.split('@')[1]}", fontsize=9)
            ax.set_xlabel("sparsity (fraction of weights pruned)", fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy %")
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="solid SNN, dashed ANN",
                        title_fontsize=7)
        paths.append(_save(fig, os.path.join(out, "robust_vs_sparsity.png")))

    # the trade-off frontier: worst-case robust accuracy vs E_dense/E_sparse of every SNN
    snns = [r for r in main if r["kind"] == "snn" and r.get("E_dense/E_sparse")]
    if len(snns) > 1 and eps:
        fig, axes = plt.subplots(1, len(eps), figsize=(4.2 * len(eps), 3.6), sharey=True, squeeze=False)
        for ax, e in zip(axes[0], eps):
            for r in snns:
                x, y = r["E_dense/E_sparse"], 100 * r[f"worst@{e}"]
                ax.scatter([x], [y], color=_color(r["method"]), s=30, zorder=3)
                ax.annotate(f"{round(100 * (r['sparsity'] or 0))} %" if r["method"] != "dense" else "dense", (x, y),
                            textcoords="offset points", xytext=(4, 3), fontsize=7)
            front, best = [], -1.0  # non-dominated points: no cheaper-or-equal SNN is more robust
            for r in sorted(snns, key=lambda r: -r["E_dense/E_sparse"]):
                if r[f"worst@{e}"] > best:
                    front.append(r)
                    best = r[f"worst@{e}"]
            ax.plot([r["E_dense/E_sparse"] for r in front], [100 * r[f"worst@{e}"] for r in front], color="gray",
                    ls=":", zorder=1, label="frontier")
            ax.set_xscale("log")
            ax.set_xlabel("E_dense / E_sparse (synops ratio, log)", fontsize=8)
            ax.set_title(f"worst case, ε = {e}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
        axes[0][0].set_ylabel("robust accuracy %")
        for m in dict.fromkeys(r["method"] for r in snns):
            axes[0][-1].scatter([], [], color=_color(m), label=m or "other")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        paths.append(_save(fig, os.path.join(out, "robust_vs_energy.png")))

    # per-layer spikes, synops and sparsity by layer name: one line per run, legend outside
    by_name = {r["name"]: r for r in runs}
    layered = [(row, by_name[row["run"]]) for row in main if by_name[row["run"]]["energy"].get("layers")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    styles = ["-", "--", ":", "-."]
    for i, (row, r) in enumerate(layered):
        en = r["energy"]
        lab = en.get("labels", {})
        names = list(en["layers"])
        style = dict(color=_color(row["method"]), ls=styles[i % len(styles)], marker="o", ms=3, label=r["name"])
        axes[0].plot([lab.get(n, n) for n in names], [en["layers"][n]["spikes"] for n in names], **style)
        axes[1].plot([lab.get(n, n) for n in names], [en["layers"][n]["synops"] for n in names], **style)
    for row in main:
        en = by_name[row["run"]]["energy"]
        sp = {k: v for k, v in en.get("sparsity", {}).items() if k != "global"}
        if row["kind"] == "ann" and sp:
            lab = en.get("labels", {})
            axes[2].plot([lab.get(n, n) for n in sp], [100 * v for v in sp.values()], color=_color(row["method"]),
                         marker="o", ms=3, label=row["run"])
    for ax, title in zip(axes, ("spikes / sample (SNN)", "synops / sample (SNN)", "weights pruned % (per layer)")):
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=45)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.set_yscale("log")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=1 + len(ax.get_legend_handles_labels()[0]) // 12)
    paths.append(_save(fig, os.path.join(out, "layers.png")))

    sweeps = t_sweeps(rows)
    if sweeps and eps:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        for base, rs in sweeps.items():
            xs = [r["synops"] for r in rs]
            ax.plot(xs, [100 * r["clean"] for r in rs], "k--", marker="s", ms=4, label=f"{base}: clean")
            for j, e in enumerate(eps):
                ys = [100 * r[f"worst@{e}"] for r in rs]
                ax.plot(xs, ys, marker="o", color=plt.cm.viridis(j / max(len(eps), 2)), label=f"{base}: worst case ε = {e}")
            for r in rs:
                ax.annotate(f"T={r['T']}", (r["synops"], 100 * r["clean"]), textcoords="offset points", xytext=(3, 4),
                            fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("synops / sample (log)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        paths.append(_save(fig, os.path.join(out, "t_sweep.png")))
    return paths


def _broken(path: str) -> tuple[dict[int, bool], dict[str, set[int]]]:
    """``per_sample.json`` -> (clean-correct per sample index, the indices broken at each epsilon). Format (what
    ``AttackEvaluation`` writes; another attack writes the same): ``{"samples": [{"index": i, "clean_correct":
    bool, "broken_by": {"<eps>": null | "<what broke it>"}}, ...]}``, null = robust to everything that attack ran."""
    try:
        samples = json.load(open(path))["samples"]
        clean = {int(x["index"]): bool(x["clean_correct"]) for x in samples}
        broken: dict[str, set[int]] = {}
        for x in samples:
            for eps, by in x["broken_by"].items():
                if by is not None and x["clean_correct"]:
                    broken.setdefault(f"{float(eps):.6g}", set()).add(int(x["index"]))
                else:
                    broken.setdefault(f"{float(eps):.6g}", set())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"error: {path}: not a per_sample.json ({type(err).__name__}: {err}); see `report.py compare "
                         "--help` for the format") from None
    return clean, broken


def compare(ours: str, theirs: str) -> str:
    """Per epsilon: robust accuracy by each evaluation, by their per-sample union (a sample counts as robust only if
    neither broke it), and the samples each broke alone. Both files must cover the same samples."""
    (ca, ba), (cb, bb) = _broken(ours), _broken(theirs)
    if set(ca) != set(cb):
        raise SystemExit(f"error: the two files cover different samples ({len(ca)} vs {len(cb)}, "
                         f"{len(set(ca) ^ set(cb))} indices in one only); evaluate the same test subset")
    if ca != cb:
        raise SystemExit("error: the two files disagree on which samples are classified correctly without attack: "
                         "not the same model (or not the same samples)")
    n, lines = len(ca), []
    lines += ["| ε | robust (ours) % | robust (theirs) % | robust (union) % | broken by ours only | by theirs only |",
              "|---|---|---|---|---|---|"]
    clean = {i for i, c in ca.items() if c}
    for eps in sorted(set(ba) | set(bb), key=float):
        a, b = ba.get(eps, set()), bb.get(eps, set())
        acc = lambda broken: 100 * len(clean - broken) / n
        only = lambda x, y: f"{len(x - y)}" + (f" ({', '.join(map(str, sorted(x - y)[:10]))}{' ...' if len(x - y) > 10 else ''})"
                                                 if x - y else "")
        lines.append(f"| {eps} | {acc(a):.1f} | {acc(b):.1f} | **{acc(a | b):.1f}** | {only(a, b)} | {only(b, a)} |")
    return "\n".join([f"{n} samples, {len(clean)} clean-correct; sample indices in brackets", "", *lines]) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        c = argparse.ArgumentParser(prog="report.py compare", description=compare.__doc__ + "\n\n" + _broken.__doc__)
        c.add_argument("ours")
        c.add_argument("theirs")
        a = c.parse_args(argv[1:])
        print(compare(a.ours, a.theirs), end="")
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of `train.py test` runs")
    p.add_argument("--out", required=True, help="folder for report.md, report.json and the plots")
    p.add_argument("--title", default="Comparison")
    a = p.parse_args(argv)
    runs = [load_run(r) for r in a.runs]
    names = [r["name"] for r in runs]
    for r, folder in zip(runs, a.runs):  # two runs of one name (two pipelines): tell them apart by their folder
        if names.count(r["name"]) > 1:
            r["label"] = os.path.join(os.path.basename(os.path.dirname(os.path.normpath(folder))), r["name"])
    os.makedirs(a.out, exist_ok=True)
    table, rows = build_table(runs)
    eps = eps_columns(rows)
    text = "\n".join(x for x in (f"# {a.title}\n", table, confidence_section(runs), claims(rows, eps),
                                  finetune_table(rows, eps), t_sweep_table(rows, eps)) if x)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "robust_samples"} for r in rows], f, indent=2)
    figs = plots(runs, rows, a.out)
    print(text)
    print(f"wrote {a.out}/report.md, report.json, " + ", ".join(os.path.basename(x) for x in figs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
