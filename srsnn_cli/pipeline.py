"""The whole method in one command: robust dense ANN -> pruning sweep -> conversion -> adversarial
fine-tuning -> evaluation -> comparison report.

    python pipeline.py --config conf/digits/pipeline.yaml [extra train.py options for every stage]

Each stage is an ordinary ``train.py`` run (its own folder, checkpoint, logs and saved config) under the
pipeline's ``run_dir``. A stage's identity is its command, the contents of its config files (and of the files
they include), the code version (a hash of the package's sources) and the identities of the stages it takes
checkpoints from. Re-running skips completed stages whose identity is unchanged and resumes an interrupted
``fit`` from its ``last.ckpt``; a stage whose config, command, code or upstream stage changed is re-run (and so is
everything downstream), saying why; its old folder is kept as ``<stage>.stale-<k>``, never overwritten.
Options after ``--config`` (e.g. ``--trainer.devices 4 --trainer.strategy ddp``) go to every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Optional

from srsnn.errors import PipelineError
from srsnn.export import card
from srsnn.io.plan import Stage, load_config, over_seeds, plan  # noqa: F401 (plan, over_seeds: read by tests)
from srsnn.io.runs import newest_under
from srsnn.io.stages import (  # noqa: F401 (CODE: read by tests)
    CODE,
    ROOT,
    _changed,
    _read_identity,
    code_version,
    identity,
    run_dir_lock,
)
from srsnn.report import leaderboard
from srsnn.robustness.results import EXAMPLES_FILE
from srsnn_cli import one_line_errors


def _script(name: str, module: str) -> list[str]:
    """``python <name>.py`` in a clone (what a user would type), ``python -m srsnn_cli.<module>`` when installed."""
    path = os.path.join(ROOT, f"{name}.py")
    return [sys.executable, path] if os.path.isfile(path) else [sys.executable, "-m", f"srsnn_cli.{module}"]


def _set_aside(d: str) -> str:
    k = 1
    while os.path.exists(f"{d}.stale-{k}"):
        k += 1
    os.rename(d, f"{d}.stale-{k}")
    return f"{d}.stale-{k}"


def last_checkpoint(stage_dir: str) -> Optional[str]:
    return newest_under(stage_dir, "last.ckpt")


def run(cfg_path: str, extra: list[str], dry_run: bool = False, publish_anyway: bool = False) -> int:
    cfg = load_config(cfg_path)
    stages = plan(cfg)
    if cfg.get("seeds") is not None and any(x.split("=")[0] == "--seed_everything" for x in extra):
        raise PipelineError(
            f"{cfg_path} runs every stage once per seed (seeds: {cfg['seeds']}); drop --seed_everything, or edit seeds:"
        )
    root = cfg["run_dir"]
    os.makedirs(root, exist_ok=True)
    if dry_run:
        return _run(cfg, stages, root, extra, dry_run, publish_anyway)
    with run_dir_lock(root):
        return _run(cfg, stages, root, extra, dry_run, publish_anyway)


def _run(cfg: dict, stages: list[Stage], root: str, extra: list[str], dry_run: bool, publish_anyway: bool) -> int:
    """Run (or, ``dry_run``, print) every stage not yet complete under its current identity, then the report."""
    code = code_version()
    ids: dict[str, dict] = {}
    for k, st in enumerate(stages, 1):
        d, head = os.path.join(root, st.name), f"== stage {k}/{len(stages)}: {st.name}"
        train = _script("train", "train")
        cmd = [*train, st.command, *st.config_args(), *st.args, *extra]
        ids[st.name] = identity(cmd[len(train) :], {src: ids[src] for src in st.needs.values()}, code)
        for opt, src in st.needs.items():
            ck = last_checkpoint(os.path.join(root, src))
            if ck is None and not dry_run:
                raise PipelineError(f"stage {st.name} needs the checkpoint of stage {src}, which has none")
            cmd += [opt, ck or f"<{src}>"]
        cmd += ["--trainer.default_root_dir", d]
        if _up_to_date(d, ids[st.name], head, dry_run):
            continue
        resume = []
        if st.command == "fit" and last_checkpoint(d):
            resume = ["--ckpt_path", last_checkpoint(d)]
            print(f"{head} — resuming from {resume[1]}", flush=True)
        else:
            print(f"{head} ({st.command} {' + '.join(st.configs)})", flush=True)
        if dry_run:
            print("   " + shlex.join(cmd + resume))
            continue
        rc = _run_stage(st, d, cmd + resume, ids[st.name], resumed=bool(resume))
        if rc != 0:
            return rc
    return 0 if dry_run else _finish(cfg, stages, root, extra, publish_anyway)


def _up_to_date(d: str, ident: dict, head: str, dry_run: bool) -> bool:
    """Whether the stage in ``d`` is complete under ``ident`` (skipped); a stage of another identity is stale: its
    folder is set aside (kept as ``<stage>.stale-<k>``) so that it re-runs, or, ``dry_run``, is reported only."""
    done, started = os.path.join(d, "DONE"), os.path.join(d, "STARTED")
    marker = done if os.path.exists(done) else started if os.path.exists(started) else None
    if marker is None:
        return False
    old = _read_identity(marker)
    if old == ident and marker == done:
        print(f"{head} — complete, skipped", flush=True)
        return True
    if old != ident:
        why = _changed(old, ident)
        if dry_run:
            print(f"{head} — stale ({why}): would re-run", flush=True)
            return True
        print(f"{head} — stale ({why}): re-running; the old results are kept in {_set_aside(d)}", flush=True)
    return False


def _run_stage(st: Stage, d: str, cmd: list[str], ident: dict, resumed: bool) -> int:
    """One stage's ``train.py`` run, its wall time and peak memory, and its ``stage.json`` / ``DONE`` markers."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "STARTED"), "w") as f:  # a fit interrupted under another identity is never resumed
        json.dump(ident, f)
    t0 = time.time()
    rc, peak_mib = run_measured(cmd)
    if rc != 0:
        print(
            f"error: stage {st.name} failed (exit {rc}); fix the cause and re-run the same "
            "command: completed stages are skipped, this one resumes",
            file=sys.stderr,
        )
        return rc
    with open(os.path.join(d, "stage_stats.json"), "w") as f:
        json.dump({"wall_s": time.time() - t0, "peak_rss_mib": peak_mib, "resumed": resumed}, f)
    with open(os.path.join(d, "stage.json"), "w") as f:  # what this stage is, for report.py (no name parsing)
        json.dump({"stage": st.name, "command": st.command, "kind": st.kind, **st.meta, "identity": ident}, f, indent=1)
    with open(os.path.join(d, "DONE"), "w") as f:
        json.dump(ident, f)
    return 0


def _finish(cfg: dict, stages: list[Stage], root: str, extra: list[str], publish_anyway: bool) -> int:
    """The comparison report over the test stages, the timings table, and the copy to ``results:``."""
    tests = [os.path.join(root, s.name) for s in stages if s.command == "test"]
    rc = subprocess.run(
        [
            *_script("report", "report"),
            *tests,
            "--out",
            os.path.join(root, "report"),
            "--title",
            cfg.get("title", "Pipeline report"),
            *(["--against", cfg["against"]] if cfg.get("against") else []),
        ],
        cwd=ROOT,
    ).returncode
    stats = [
        (st.name, json.load(open(path)))
        for st in stages
        if os.path.exists(path := os.path.join(root, st.name, "stage_stats.json"))
    ]
    if stats:
        mib = lambda v: "n/a" if v is None else f"{v:.0f}"
        rows = "".join(
            f"| {n} | {v['wall_s']:.1f}{' (resumed part)' if v['resumed'] else ''} | {mib(v['peak_rss_mib'])} |\n"
            for n, v in stats
        )
        with open(os.path.join(root, "report", "timings.md"), "w") as f:
            f.write(
                f"| stage | wall time (s) | peak memory (MiB, max RSS) |\n|---|---|---|\n{rows}"
                f"| **total** | {sum(v['wall_s'] for _, v in stats):.1f} | "
                f"{mib(max((v['peak_rss_mib'] or 0) for _, v in stats))} (largest stage) |\n"
            )
        print("wall time per stage: " + ", ".join(f"{n} {v['wall_s']:.0f}s" for n, v in stats))
    if rc == 0 and cfg.get("results"):
        if not publishes(extra, publish_anyway):
            # the published folder documents the recipe as written; options given on top of it change its stages
            print(
                f"{cfg['results']} not updated: this run changes the recipe's stages ({shlex.join(extra)}); its "
                f"report is in {os.path.join(root, 'report')} (pass --publish to copy it there anyway)",
                flush=True,
            )
        else:
            publish(os.path.join(root, "report"), tests, cfg["results"], root)
    return rc


def publishes(extra: list[str], publish_anyway: bool) -> bool:
    """Whether a run updates its pipeline's ``results:`` folder: only the recipe as written (no options on top of it,
    which change its stages, e.g. ``--trainer.max_epochs 1``), unless ``--publish`` asks for it."""
    return not extra or publish_anyway


def publish(report_dir: str, tests: list[str], dest: str, root: str) -> None:
    """Copy the report (tables, figures, timings) and every evaluated model's own evaluation report and per-sample
    record (``evaluation/<stage>.md``, ``<stage>.per_sample.json``; over seeds ``evaluation/seed<k>/<stage>...``)
    to ``dest`` (the pipeline's ``results:`` folder, e.g. ``results/mnist5k``)."""
    os.makedirs(os.path.join(dest, "evaluation"), exist_ok=True)
    for f in sorted(os.listdir(report_dir)):
        shutil.copy2(os.path.join(report_dir, f), os.path.join(dest, f))
    for t in tests:
        found = newest_under(t, "evaluation", "attacks.md")
        if found:
            name = os.path.join(dest, "evaluation", os.path.relpath(t, root))
            os.makedirs(os.path.dirname(name), exist_ok=True)
            shutil.copy2(found, f"{name}.md")
            samples = os.path.join(os.path.dirname(found), "per_sample.json")  # for paired tests, `report.py compare`
            if os.path.exists(samples):
                shutil.copy2(samples, f"{name}.per_sample.json")
            publish_card(os.path.dirname(found), name)
    if any(f.endswith(".card.json") for _, _, fs in os.walk(dest) for f in fs):
        leaderboard.write([dest], dest, os.path.basename(os.path.normpath(dest)))
    print(f"results copied to {dest}")


def publish_card(evaluation: str, name: str) -> None:
    """A run's card as ``<name>.card.json`` beside ``<name>.adversarial.safetensors.gz`` (the card names its examples
    file; its model is found with ``report.py verify --config ... --ckpt_path ...``)."""
    card_path = os.path.join(evaluation, "card.json")
    if not os.path.exists(card_path):
        return
    c = card.Card.read(card_path)
    examples = os.path.join(evaluation, c.examples["file"])
    c.examples["file"] = os.path.basename(f"{name}.{EXAMPLES_FILE}")
    if os.path.exists(examples):
        shutil.copy2(examples, f"{name}.{EXAMPLES_FILE}")
    c.run = {"config": None, "ckpt_path": None, "published_from": os.path.relpath(evaluation, ROOT)}
    c.write(f"{name}.card.json")


def run_measured(cmd: list[str]) -> tuple[int, Optional[float]]:
    """Run a stage; return its exit code and peak resident memory in MiB (the stage process and its children,
    e.g. DDP workers: the largest of them; None where the OS does not report it)."""
    proc = subprocess.Popen(cmd, cwd=ROOT)
    if not hasattr(os, "wait4"):
        return proc.wait(), None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:  # Ctrl-C reached the stage too (same process group): let it save and stop
        proc.wait()
        raise PipelineError("interrupted; re-run the same command to resume (completed stages are skipped)") from None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        required=True,
        action="append",
        help="pipeline YAML (conf/<dataset>/pipeline.yaml); a further --config (e.g. conf/trainer/ddp.yaml) "
        "goes to every stage",
    )
    p.add_argument("--dry_run", action="store_true", help="print the stages and commands, run nothing")
    p.add_argument(
        "--publish",
        action="store_true",
        help="copy the report to the pipeline's results: folder even when extra options change its stages",
    )
    a, extra = p.parse_known_args(argv)
    for more in a.config[1:]:
        extra += ["--config", more]
    return run(a.config[0], extra, a.dry_run, a.publish)


if __name__ == "__main__":
    sys.exit(main())
