"""The whole method in one command: robust dense ANN -> pruning sweep -> conversion -> adversarial
fine-tuning -> evaluation -> comparison report.

    python pipeline.py --config conf/digits/pipeline.yaml [extra train.py options for every stage]

Each stage is an ordinary ``train.py`` run (its own folder, checkpoint, logs and saved config) under the
pipeline's ``run_dir``. Re-running the same command skips completed stages and resumes an interrupted
``fit`` from its ``last.ckpt``; a stage completed with a different command is refused, never overwritten.
Options after ``--config`` (e.g. ``--trainer.devices 4 --trainer.strategy ddp``) go to every stage.
"""
from __future__ import annotations

import argparse
import glob
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


class PipelineError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"error: {message}")


@dataclass
class Stage:
    name: str
    command: str  # fit | test
    config: str
    args: list[str] = field(default_factory=list)
    needs: dict[str, str] = field(default_factory=dict)  # option -> stage whose checkpoint it takes
    kind: str = "ann"


def plan(cfg: dict) -> list[Stage]:
    """Expand a pipeline config into its stages (the pruning sweep included)."""
    for key in ("run_dir", "ann", "snn"):
        if key not in cfg:
            raise PipelineError(f"pipeline config needs '{key}'")
    extra = cfg.get("args", {}) or {}
    a = lambda kind: [str(x) for x in extra.get(kind, [])]
    stages = [Stage("ann", "fit", cfg["ann"], a("ann")),
              Stage("ann_test", "test", cfg["ann"], a("ann_test"), {"--ckpt_path": "ann"}),
              Stage("snn", "fit", cfg["snn"], a("snn"), {"--model.init_args.ann_checkpoint": "ann"}, "snn"),
              Stage("snn_test", "test", cfg["snn"], a("snn_test"), {"--ckpt_path": "snn"}, "snn")]
    for entry in cfg.get("pruning", []) or []:
        for s in entry.get("sparsity", []):
            tag = f"{entry['name']}{round(100 * float(s))}"
            stages += [
                Stage(f"{tag}_ann", "fit", entry["config"], a("prune") + ["--trainer.callbacks.init_args.sparsity", str(s)],
                      {"--model.init_args.init_from": "ann"}),
                Stage(f"{tag}_ann_test", "test", cfg["ann"], a("ann_test"), {"--ckpt_path": f"{tag}_ann"}),
                Stage(f"{tag}_snn", "fit", cfg["snn"], a("snn"), {"--model.init_args.ann_checkpoint": f"{tag}_ann"}, "snn"),
                Stage(f"{tag}_snn_test", "test", cfg["snn"], a("snn_test"), {"--ckpt_path": f"{tag}_snn"}, "snn"),
            ]
    return stages


def last_checkpoint(stage_dir: str) -> Optional[str]:
    found = sorted(glob.glob(os.path.join(stage_dir, "**", "last.ckpt"), recursive=True), key=os.path.getmtime)
    return found[-1] if found else None


def run(cfg_path: str, extra: list[str], dry_run: bool = False) -> int:
    if not os.path.isfile(cfg_path):
        raise PipelineError(f"pipeline config {cfg_path!r} does not exist")
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f) or {}
    stages = plan(cfg)
    root = cfg["run_dir"]
    os.makedirs(root, exist_ok=True)
    timings = []
    for k, st in enumerate(stages, 1):
        d = os.path.join(root, st.name)
        cmd = [sys.executable, os.path.join(HERE, "train.py"), st.command, "--config", st.config, *st.args]
        for opt, src in st.needs.items():
            ck = last_checkpoint(os.path.join(root, src))
            if ck is None and not dry_run:
                raise PipelineError(f"stage {st.name} needs the checkpoint of stage {src}, which has none")
            cmd += [opt, ck or f"<{src}>"]
        cmd += ["--trainer.default_root_dir", d, "--trainer.logger.init_args.save_dir", d, *extra]
        key = shlex.join(cmd[2:])  # without the interpreter and script paths
        done = os.path.join(d, "DONE")
        if os.path.exists(done):
            if open(done).read().strip() != key:
                raise PipelineError(f"stage {st.name} in {d} was completed with another command; "
                                    "its results are kept: use a new run_dir or remove that folder")
            print(f"== stage {k}/{len(stages)}: {st.name} — complete, skipped", flush=True)
            continue
        resume = []
        if st.command == "fit" and last_checkpoint(d):
            resume = ["--ckpt_path", last_checkpoint(d)]
            print(f"== stage {k}/{len(stages)}: {st.name} — resuming from {resume[1]}", flush=True)
        else:
            print(f"== stage {k}/{len(stages)}: {st.name} ({st.command} {st.config})", flush=True)
        if dry_run:
            print("   " + shlex.join(cmd + resume))
            continue
        os.makedirs(d, exist_ok=True)
        t0 = time.time()
        proc = subprocess.run(cmd + resume, cwd=HERE)
        if proc.returncode != 0:
            print(f"error: stage {st.name} failed (exit {proc.returncode}); fix the cause and re-run the same "
                  "command: completed stages are skipped, this one resumes", file=sys.stderr)
            return proc.returncode
        with open(done, "w") as f:
            f.write(key + "\n")
        timings.append((st.name, time.time() - t0))
    if dry_run:
        return 0
    tests = [os.path.join(root, s.name) for s in stages if s.command == "test"]
    rc = subprocess.run([sys.executable, os.path.join(HERE, "report.py"), *tests, "--out", os.path.join(root, "report"),
                         "--title", cfg.get("title", "Pipeline report")], cwd=HERE).returncode
    if timings:
        with open(os.path.join(root, "report", "timings.md"), "w") as f:
            f.write("| stage | wall time (s) |\n|---|---|\n" + "".join(f"| {n} | {t:.1f} |\n" for n, t in timings))
        print("wall time per stage: " + ", ".join(f"{n} {t:.0f}s" for n, t in timings))
    return rc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="pipeline YAML (conf/<dataset>/pipeline.yaml)")
    p.add_argument("--dry_run", action="store_true", help="print the stages and commands, run nothing")
    a, extra = p.parse_known_args(argv)
    return run(a.config, extra, a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
