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
import json
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
    for k, st in enumerate(stages, 1):
        d = os.path.join(root, st.name)
        cmd = [sys.executable, os.path.join(HERE, "train.py"), st.command, "--config", st.config, *st.args]
        for opt, src in st.needs.items():
            ck = last_checkpoint(os.path.join(root, src))
            if ck is None and not dry_run:
                raise PipelineError(f"stage {st.name} needs the checkpoint of stage {src}, which has none")
            cmd += [opt, ck or f"<{src}>"]
        cmd += ["--trainer.default_root_dir", d, *extra]
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
        rc, peak_mib = run_measured(cmd + resume)
        if rc != 0:
            print(f"error: stage {st.name} failed (exit {rc}); fix the cause and re-run the same "
                  "command: completed stages are skipped, this one resumes", file=sys.stderr)
            return rc
        with open(os.path.join(d, "stage_stats.json"), "w") as f:
            json.dump({"wall_s": time.time() - t0, "peak_rss_mib": peak_mib, "resumed": bool(resume)}, f)
        with open(done, "w") as f:
            f.write(key + "\n")
    if dry_run:
        return 0
    tests = [os.path.join(root, s.name) for s in stages if s.command == "test"]
    rc = subprocess.run([sys.executable, os.path.join(HERE, "report.py"), *tests, "--out", os.path.join(root, "report"),
                         "--title", cfg.get("title", "Pipeline report")], cwd=HERE).returncode
    stats = [(st.name, json.load(open(path))) for st in stages
             if os.path.exists(path := os.path.join(root, st.name, "stage_stats.json"))]
    if stats:
        mib = lambda v: "n/a" if v is None else f"{v:.0f}"
        rows = "".join(f"| {n} | {v['wall_s']:.1f}{' (resumed part)' if v['resumed'] else ''} | "
                       f"{mib(v['peak_rss_mib'])} |\n" for n, v in stats)
        with open(os.path.join(root, "report", "timings.md"), "w") as f:
            f.write(f"| stage | wall time (s) | peak memory (MiB, max RSS) |\n|---|---|---|\n{rows}"
                    f"| **total** | {sum(v['wall_s'] for _, v in stats):.1f} | "
                    f"{mib(max((v['peak_rss_mib'] or 0) for _, v in stats))} (largest stage) |\n")
        print("wall time per stage: " + ", ".join(f"{n} {v['wall_s']:.0f}s" for n, v in stats))
    return rc


def run_measured(cmd: list[str]) -> tuple[int, Optional[float]]:
    """Run a stage; return its exit code and peak resident memory in MiB (the stage process and its children,
    e.g. DDP workers: the largest of them; None where the OS does not report it)."""
    proc = subprocess.Popen(cmd, cwd=HERE)
    if not hasattr(os, "wait4"):
        return proc.wait(), None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:  # Ctrl-C reached the stage too (same process group): let it save and stop
        proc.wait()
        raise PipelineError("interrupted; re-run the same command to resume (completed stages are skipped)") from None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, action="append",
                   help="pipeline YAML (conf/<dataset>/pipeline.yaml); a further --config (e.g. conf/trainer/ddp.yaml) "
                        "goes to every stage")
    p.add_argument("--dry_run", action="store_true", help="print the stages and commands, run nothing")
    a, extra = p.parse_known_args(argv)
    for more in a.config[1:]:
        extra += ["--config", more]
    return run(a.config[0], extra, a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
