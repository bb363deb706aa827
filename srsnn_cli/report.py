"""``python report.py <runs> --out <folder>`` and ``python report.py compare ours.json theirs.json``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import callbacks.pruning  # noqa: F401 - registers every pruning method (the report's labels and colors)
from srsnn.errors import UserError
from srsnn.export import card
from srsnn.io.runs import files_under
from srsnn.report import __doc__ as DOC
from srsnn.report import leaderboard
from srsnn.report.claims import claims
from srsnn.report.figures import plots
from srsnn.report.per_sample import compare, read
from srsnn.report.runs import load_run
from srsnn.report.seeds import against_published, seed_of
from srsnn.report.tables import build_table, confidence_section, eps_columns, finetune_table, t_sweep_table
from srsnn.robustness.results import Examples
from srsnn_cli import one_line_errors


def _compare(argv: list[str]) -> int:
    c = argparse.ArgumentParser(prog="report.py compare", description=compare.__doc__ + "\n\n" + read.__doc__)
    c.add_argument("ours")
    c.add_argument("theirs")
    a = c.parse_args(argv)
    print(compare(a.ours, a.theirs), end="")
    return 0


def _leaderboard(argv: list[str]) -> int:
    c = argparse.ArgumentParser(prog="report.py leaderboard", description=leaderboard.__doc__)
    c.add_argument("cards", nargs="+", help="folders holding card.json / <stage>.card.json files, or the files")
    c.add_argument("--out", required=True, help="folder for leaderboard.md and leaderboard.html")
    c.add_argument("--title", default="Leaderboard")
    a = c.parse_args(argv)
    md, page, n = leaderboard.write(a.cards, a.out, a.title)
    print(f"wrote {md} and {page} ({n} models)")
    return 0


def _verify(argv: list[str]) -> int:
    c = argparse.ArgumentParser(
        prog="report.py verify",
        description="Check model cards without any attack: the carded weights and test images (SHA-256), every stored "
        "adversarial example inside its eps ball and [0, 1] and misclassified, the counts per epsilon. "
        + card.__doc__.split("\n\n")[1].replace("\n", " "),
    )
    c.add_argument("cards", nargs="+", help="card.json files, or folders holding them (the newest under each)")
    c.add_argument("--ckpt_path", help="the model's checkpoint (default: the one the card names)")
    c.add_argument("--config", help="the model's config (default: the run's config.yaml beside the card)")
    a = c.parse_args(argv)
    failed = 0
    for path in a.cards:
        path = path if path.endswith(".json") else (files_under(path, "evaluation", "card.json") or [path])[-1]
        verdict = _verify_one(path, a.ckpt_path, a.config)
        noise = f"; {len(verdict.noise)} within floating-point noise: {verdict.noise[0]}" if verdict.noise else ""
        if verdict.ok:
            print(f"verified {path}: {verdict.checked} adversarial examples fool the model inside their balls; the "
                  f"weights, the test images and the counts per epsilon are the card's{noise}")  # fmt: skip
        else:
            more = f" (and {len(verdict.failures) - 1} more)" if len(verdict.failures) > 1 else ""
            print(f"error: {path}: {verdict.failures[0]}{more}{noise}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _verify_one(path: str, ckpt_path, config) -> card.Verdict:
    import torch

    from callbacks.shards import first_samples
    from lightning_modules.loading import load_trained

    crd = card.Card.read(path)
    here = os.path.dirname(os.path.abspath(path))
    if not (config or crd.run.get("config")):
        raise UserError(
            f"{path} names no run folder (a published card): pass --config <the run's config.yaml> and --ckpt_path "
            "<its checkpoint>"
        )
    config = config or os.path.normpath(os.path.join(here, crd.run["config"]))
    module, dm, _ = load_trained(config, ckpt_path or crd.run.get("ckpt_path"))
    dm.setup("test")
    x, y = first_samples(dm, crd.data["num_samples"])
    examples = Examples.read(os.path.join(here, crd.examples["file"]))
    with torch.no_grad():
        return card.verify(crd, module.model, x, y, examples)


@one_line_errors
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        return _compare(argv[1:])
    if argv[:1] == ["verify"]:
        return _verify(argv[1:])
    if argv[:1] == ["leaderboard"]:
        return _leaderboard(argv[1:])
    p = argparse.ArgumentParser(prog="report.py", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of `train.py test` runs")
    p.add_argument("--out", required=True, help="folder for report.md, report.json and the plots")
    p.add_argument("--title", default="Comparison")
    p.add_argument(
        "--against",
        help="a published report.json over seeds (e.g. results/digits/report.json): each number of this report "
        "beside its mean and range there",
    )
    a = p.parse_args(argv)
    runs = [load_run(r) for r in a.runs]
    for r, folder in zip(runs, a.runs):  # two runs of one name (two pipelines): tell them apart by their folder
        if sum(x["name"] == r["name"] and seed_of(x) == seed_of(r) for x in runs) > 1:
            r["label"] = os.path.join(os.path.basename(os.path.dirname(os.path.normpath(folder))), r["name"])
    os.makedirs(a.out, exist_ok=True)
    table, rows, per_seed = build_table(runs)  # the claims read each seed's rows
    eps = eps_columns(rows)
    several = len({seed_of(r) for r in runs}) > 1
    text = "\n".join(
        x
        for x in (
            f"# {a.title}\n",
            table,
            against_published(rows, a.against, eps) if a.against else "",
            confidence_section([dict(r, label=f"{r['name']} (seed {seed_of(r)})") for r in runs] if several else runs),
            claims(per_seed, eps),
            finetune_table(rows, eps),
            t_sweep_table(rows, eps),
        )
        if x
    )
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "robust_samples"} for r in rows], f, indent=2)
    first = [r for r in runs if seed_of(r) == seed_of(runs[0])]  # the per-run figures: the first seed's
    figs = plots(first, rows, a.out)
    print(text)
    print(f"wrote {a.out}/report.md, report.json, " + ", ".join(os.path.basename(x) for x in figs))
    return 0
