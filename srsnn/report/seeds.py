"""Several seeds of one pipeline: one row per run over its seeds (mean and range), and a run of one seed held against
the published spread of several."""

from __future__ import annotations

import json
from typing import Any

from srsnn.robustness.reporting import pct

Row = dict[str, Any]


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
        row["spread"] = {}
        for k in row:
            vals = [r.get(k) for r in mine]
            if len(set(map(repr, vals))) == 1:
                continue
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                row[k], row["spread"][k] = sum(vals) / len(vals), [min(vals), max(vals)]
            else:  # a text that differs between seeds (the audit, an interruption): each seed's
                row[k] = "; ".join(f"seed {r['seed']}: {r.get(k) or '-'}" for r in mine)
        row["seeds"] = [r["seed"] for r in mine]
        row["per_seed"] = [{k: v for k, v in r.items() if k != "robust_samples"} for r in mine]
        out.append(row)
    return out


def against_published(rows: list[Row], published: str, eps_cols: list[str]) -> str:
    """Each worst-case (and clean) number of this report beside the published mean and min–max over seeds of the
    run of the same name in ``published`` (a ``report.json`` over seeds): inside the spread, or outside by how many
    points. Training differs between CPUs and GPUs (floating-point kernels), so a run elsewhere is one more draw
    from the seed spread, not a copy of any seed."""
    try:
        theirs = {r["run"]: r for r in json.load(open(published))}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"## Against the published seeds\n\n{published} not read ({type(err).__name__}: {err}).\n"
    lines, outside = [], 0
    for row in rows:
        ref = theirs.get(row["run"])
        if not ref or not ref.get("per_seed") or row.get("seeds"):
            continue
        for key in ["clean"] + [f"worst@{e}" for e in eps_cols]:
            mine, vals = row.get(key), [s.get(key) for s in ref["per_seed"]]
            if mine is None or None in vals:
                continue
            lo, hi = min(vals), max(vals)
            off = 100 * (lo - mine if mine < lo else mine - hi if mine > hi else 0)
            outside += off > 0
            lines.append(
                f"| {row['run']} | {key.replace('worst@', 'worst case ε=')} | {pct(mine)} | "
                f"{pct(sum(vals) / len(vals))} ({pct(lo)}–{pct(hi)}) | "
                + (f"outside by {off:.1f} points" if off > 0 else "inside")
                + " |"
            )
    if not lines:
        return ""
    n = len(next(iter(theirs.values())).get("per_seed") or [])
    return (
        "\n".join(
            [
                "## Against the published seeds",
                "",
                f"This run's numbers beside the published mean and range over {n} seeds ({published}). Training "
                "differs between CPUs and GPUs (floating-point kernels): a run on another machine is another draw "
                "from the seed spread; a cell a few points outside a 3-seed range is expected now and then.",
                "",
                "| run | number | this run % | published mean (min–max) % | |",
                "|---|---|---|---|---|",
                *lines,
                "",
                f"{len(lines) - outside} of {len(lines)} inside the published range.",
            ]
        )
        + "\n"
    )
