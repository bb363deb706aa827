"""A folder of model cards (``card.json``, ``srsnn.export.card``) as a leaderboard: one markdown table and one
static HTML page (no server, no download: sortable by clicking a column, with the robust-accuracy-vs-energy plot).

    python report.py leaderboard results/digits results/native_snn --out results/leaderboard
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Optional

from srsnn.errors import UserError
from srsnn.export.card import Card

_SKIP = {"evaluation", "test", "validate"}  # folders between a stage's run folder and its card


def collect(paths: list[str]) -> list[tuple[str, Card]]:
    """``(name, card)`` of every ``card.json`` / ``*.card.json`` under ``paths``; a run's name is its stage folder
    (``runs/pipeline/digits/snn_test/test/version_0/evaluation/card.json`` -> ``snn_test``) or the published file's
    stem (``results/digits/evaluation/seed0/snn_test.card.json`` -> ``seed0/snn_test``)."""
    found = []
    for p in map(Path, paths):
        files = [p] if p.is_file() else sorted(p.rglob("card.json")) + sorted(p.rglob("*.card.json"))
        for f in files:
            found.append((_name(f), Card.read(str(f))))
    if not found:
        raise UserError(f"no card.json under {', '.join(paths)}; `train.py test` writes one beside attacks.json")
    return found


def _name(f: Path) -> str:
    if f.name != "card.json":
        seed = f.parent.name if f.parent.name.startswith("seed") else ""
        return os.path.join(seed, f.name.removesuffix(".card.json"))
    parts = [x for x in f.parent.parts if x not in _SKIP and not x.startswith("version_")]
    return parts[-1] if parts else str(f.parent)


def rows(cards: list[tuple[str, Card]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per card and the epsilons (columns) over all of them."""
    eps_cols = sorted({e for _, c in cards for e in c.eps}, key=float)
    out = []
    for name, c in cards:
        energy = c.energy or {}
        passes = c.evaluation.get("passes_per_sample") or {}
        out.append(
            {
                "model": name,
                "kind": c.model.get("kind"),
                "sparsity": c.model.get("sparsity"),
                "clean": next(iter(c.eps.values()))["clean_acc"] if c.eps else None,
                **{f"worst@{e}": (c.eps.get(e) or {}).get("worst") for e in eps_cols},
                "converged": all(v.get("converged") is not False for v in c.eps.values()),
                "energy_uj": energy.get("energy_uj_per_sample"),
                "synops": energy.get("synops_per_sample"),
                "stored_bytes": c.model.get("stored_bytes"),
                "passes": (passes.get("forward", 0) + passes.get("backward", 0)) or None,
                "examples": c.examples.get("count"),
            }
        )
    return out, eps_cols


COLUMNS = [  # (key, header, how to show it)
    ("model", "model", str),
    ("kind", "kind", str),
    ("sparsity", "sparsity %", lambda v: f"{100 * v:.1f}"),
    ("clean", "clean %", lambda v: f"{100 * v:.1f}"),
]
TAIL = [
    ("converged", "converged", lambda v: "yes" if v else "no"),
    ("energy_uj", "energy µJ/sample (estimate)", lambda v: f"{v:.4f}"),
    ("synops", "synops/sample", lambda v: f"{v:,.0f}"),
    ("stored_bytes", "stored bytes", lambda v: f"{v:,}"),
    ("passes", "passes/sample", lambda v: f"{v:,.0f}"),
    ("examples", "examples", str),
]


def _columns(eps_cols: list[str]) -> list[tuple]:
    worst = [(f"worst@{e}", f"worst case ε={e} %", lambda v: f"{100 * v:.1f}") for e in eps_cols]
    return COLUMNS + worst + TAIL


def _show(fmt, v) -> str:
    return "–" if v is None else fmt(v)


def markdown(table: list[dict[str, Any]], eps_cols: list[str], title: str) -> str:
    cols = _columns(eps_cols)
    order = sorted(table, key=lambda r: -(r.get(f"worst@{eps_cols[0]}") or 0) if eps_cols else 0)
    lines = [f"# {title}", "", "| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_show(f, r.get(k)) for k, _, f in cols) + " |" for r in order]
    lines += [
        "",
        "Worst case: per sample, broken by anything the evaluation ran (each break's example is in the card's "
        "adversarial.safetensors.gz; `python report.py verify` checks them). Sorted by the first ε.",
    ]
    return "\n".join(lines) + "\n"


def _plot(table: list[dict[str, Any]], key: str, width: int = 480, height: int = 300) -> str:
    """The robust accuracy (``key``) against the energy estimate, as inline SVG (log energy axis)."""
    import math

    pts = [(r["model"], r["energy_uj"], r[key]) for r in table if r.get("energy_uj") and r.get(key) is not None]
    if not pts:
        return "<p>No card has both an energy estimate and a worst case.</p>"
    lo, hi = min(math.log10(e) for _, e, _ in pts), max(math.log10(e) for _, e, _ in pts)
    span = (hi - lo) or 1.0
    x = lambda e: 50 + (width - 70) * (math.log10(e) - lo) / span
    y = lambda a: height - 40 - (height - 60) * a
    dots = "".join(
        f'<circle class="point" cx="{x(e):.1f}" cy="{y(a):.1f}" r="4"><title>{html.escape(m)}: '
        f"{100 * a:.1f} %, {e:.4f} µJ</title></circle>"
        f'<text x="{x(e) + 6:.1f}" y="{y(a) - 6:.1f}" font-size="10">{html.escape(m)}</text>'
        for m, e, a in pts
    )
    axes = (
        f'<line x1="50" y1="{height - 40}" x2="{width - 20}" y2="{height - 40}" stroke="black"/>'
        f'<line x1="50" y1="20" x2="50" y2="{height - 40}" stroke="black"/>'
        f'<text x="{width / 2:.0f}" y="{height - 8}" font-size="11" text-anchor="middle">energy estimate, µJ/sample'
        " (log scale)</text>"
        f'<text x="14" y="{height / 2:.0f}" font-size="11" transform="rotate(-90 14 {height / 2:.0f})" '
        f'text-anchor="middle">{html.escape(key.replace("worst@", "worst case at ε="))}</text>'
    )
    return f'<svg id="plot" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{axes}{dots}</svg>'


_SORT_JS = """
document.querySelectorAll('#board th').forEach((th, col) => th.addEventListener('click', () => {
  const body = document.querySelector('#board tbody');
  const down = th.dataset.order !== 'desc';
  th.dataset.order = down ? 'desc' : 'asc';
  const value = tr => { const c = tr.children[col]; const n = parseFloat(c.dataset.value);
                        return isNaN(n) ? c.textContent : n; };
  [...body.rows].sort((a, b) => { const p = value(a), q = value(b);
    const r = typeof p === 'number' && typeof q === 'number' ? p - q : String(p).localeCompare(String(q));
    return down ? -r : r; }).forEach(tr => body.appendChild(tr));
}));
"""


def html_page(table: list[dict[str, Any]], eps_cols: list[str], title: str) -> str:
    cols = _columns(eps_cols)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-value="{"" if not isinstance(r.get(k), (int, float)) else r.get(k)}">'
            f"{html.escape(_show(f, r.get(k)))}</td>"
            for k, _, f in cols
        )
        + "</tr>"
        for r in table
    )
    plot = _plot(table, f"worst@{eps_cols[0]}") if eps_cols else ""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif} table{border-collapse:collapse} th,td{border:1px solid #ccc;"
        "padding:3px 6px;text-align:right} th{cursor:pointer;background:#eee}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Click a column to sort. Worst case: per sample, broken by anything the "
        "evaluation ran; every break's adversarial example ships with its card (python report.py verify).</p>"
        f"<table id='board'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Robust accuracy vs energy</h2>{plot}<script>{_SORT_JS}</script></body></html>"
    )


def write(paths: list[str], out: str, title: str = "Leaderboard") -> tuple[str, str, Optional[int]]:
    """``leaderboard.md`` and ``leaderboard.html`` of the cards under ``paths`` into ``out``."""
    table, eps_cols = rows(collect(paths))
    os.makedirs(out, exist_ok=True)
    md, page = os.path.join(out, "leaderboard.md"), os.path.join(out, "leaderboard.html")
    with open(md, "w") as f:
        f.write(markdown(table, eps_cols, title))
    with open(page, "w") as f:
        f.write(html_page(table, eps_cols, title))
    return md, page, len(table)
