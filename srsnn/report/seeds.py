"""Several seeds of one pipeline: one row per run over its seeds (mean and range), and a run of one seed held against
the published spread of several."""

from __future__ import annotations

import json
from statistics import fmean, stdev
from typing import Any

from srsnn.robustness.reporting import pct

Row = dict[str, Any]


def seed_of(run: dict[str, Any]) -> Any:
    """The seed a loaded run was trained with (its ``stage.json``; None outside a seeds pipeline)."""
    return (run.get("stage") or {}).get("seed")


def over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run over its seeds: a number that differs between seeds is their mean, with ``spread[key] =
    [min, max]``; ``seeds`` lists them and ``per_seed`` holds each seed's row. Rows of one seed are returned as
    they are."""
    if len({r.get("seed") for r in rows}) <= 1:
        return rows
    out = []
    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        row: dict[str, Any] = {k: v for k, v in mine[0].items() if k not in ("seed", "robust_samples")}
        spread = {}
        for k in row:
            vals = [r.get(k) for r in mine]
            if len(set(map(repr, vals))) == 1:
                continue
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                row[k], spread[k] = fmean(vals), [min(vals), max(vals)]
            else:  # a text that differs between seeds (the audit, an interruption): each seed's
                row[k] = "; ".join(f"seed {r['seed']}: {r.get(k) or '-'}" for r in mine)
        row["spread"], row["seeds"] = spread, [r["seed"] for r in mine]
        row["per_seed"] = [{k: v for k, v in r.items() if k != "robust_samples"} for r in mine]
        out.append(row)
    return out


def prediction_interval(vals: list[float], level: float = 0.95) -> tuple[float, float]:
    """Where another draw from the seeds' distribution falls with probability ``level`` (normal model, Student t):
    ``mean ± t_{(1+level)/2, n-1} · s · sqrt(1 + 1/n)``. With 3 seeds another draw lies outside their min–max in
    half the cases (it is the lowest or highest of 4 with probability 2/4); this interval is the fair yardstick."""
    from scipy.stats import t

    n, mean = len(vals), fmean(vals)
    half = float(t.ppf((1 + level) / 2, n - 1)) * stdev(vals) * (1 + 1 / n) ** 0.5 if n > 1 else 0.0
    return max(0.0, mean - half), min(1.0, mean + half)


def against_published(rows: list[Row], published: str, eps_cols: list[str]) -> str:
    """Each worst-case (and clean) number of this report beside the published mean, min–max and 95 % prediction
    interval over seeds of the run of the same name in ``published`` (a ``report.json`` over seeds): inside the
    range, inside the interval, or outside it by how many points. Training differs between CPUs and GPUs
    (floating-point kernels), so a run elsewhere is one more draw from the seed spread, not a copy of any seed."""
    try:
        theirs = {r["run"]: r for r in json.load(open(published))}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"## Against the published seeds\n\n{published} not read ({type(err).__name__}: {err}).\n"
    lines, counts = [], {"range": 0, "interval": 0}
    for row in rows:
        ref = theirs.get(row["run"])
        if not ref or not ref.get("per_seed") or row.get("seeds"):
            continue
        for key in ["clean"] + [f"worst@{e}" for e in eps_cols]:
            mine, vals = row.get(key), [s.get(key) for s in ref["per_seed"]]
            if mine is None or None in vals:
                continue
            (lo, hi), (plo, phi) = (min(vals), max(vals)), prediction_interval(vals)
            in_range = lo <= mine <= hi
            off = 100 * (plo - mine if mine < plo else mine - phi if mine > phi else 0)
            off = off if off > 1e-9 else 0  # seeds that agree: their mean may be an ulp off their common value
            where = (
                "inside the range" if in_range else "inside the interval" if not off else f"outside by {off:.1f} points"
            )
            counts["range"] += in_range
            counts["interval"] += not off
            lines.append(
                f"| {row['run']} | {key.replace('worst@', 'worst case ε=')} | {pct(mine)} | "
                f"{pct(fmean(vals))} ({pct(lo)}–{pct(hi)}) | {pct(plo)}–{pct(phi)} | {where} |"
            )
    if not lines:
        return ""
    n = len(next(iter(theirs.values())).get("per_seed") or [])
    return (
        "\n".join(
            [
                "## Against the published seeds",
                "",
                f"This run's numbers beside the published mean, range and 95 % prediction interval over {n} seeds "
                f"({published}). Training differs between CPUs and GPUs (floating-point kernels): a run on another "
                f"machine is another draw from the seed spread, and with {n} seeds another draw falls outside their "
                "range about half the time; the prediction interval (mean ± t · s · √(1 + 1/n)) is where it lands "
                "95 % of the time.",
                "",
                "| run | number | this run % | published mean (min–max) % | 95 % prediction interval % | |",
                "|---|---|---|---|---|---|",
                *lines,
                "",
                f"{counts['range']} of {len(lines)} inside the published range, {counts['interval']} of {len(lines)} "
                "inside the prediction interval.",
            ]
        )
        + "\n"
    )
