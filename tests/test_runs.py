"""Runs follow Lightning's conventions: outputs under --trainer.default_root_dir, run folders as checkpoint
arguments, evaluations that never take a fit's version number, resumes in the same folder, clean stops."""

import csv
import json
import signal
import subprocess
import sys
import time

import torch

from helpers import ROOT, run_cli, tiny_eval, tiny_overrides


def test_outputs_checkpoints_and_resume_follow_the_run_folder(tmp_path):
    root = tmp_path / "myruns"
    out = run_cli("train.py", "fit", "--config", "conf/digits/ann.yaml", *tiny_overrides(root, epochs=1))
    version0 = root / "lightning_logs" / "version_0"
    last, best = version0 / "checkpoints" / "last.ckpt", version0 / "checkpoints" / "best.ckpt"
    assert last.is_file() and best.is_file() and (version0 / "config.yaml").is_file()
    assert f"done: run folder {version0}" in out.stdout and str(last) in out.stdout and str(best) in out.stdout
    assert "Tip:" not in out.stdout + out.stderr  # no advertising a user cannot act on
    # an evaluation takes the run folder and writes beside it, not into lightning_logs/version_1
    out = run_cli(
        "train.py",
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--config",
        tiny_eval(tmp_path),
        "--ckpt_path",
        str(root),
        *tiny_overrides(root),
    )
    assert (root / "test" / "version_0" / "evaluation" / "attacks.json").is_file()
    assert "results: " in out.stdout
    # resuming continues version_0: best/last stay in one place and the saved config is kept
    rows = lambda: list(csv.DictReader((version0 / "metrics.csv").open()))
    first = rows()
    assert {r["epoch"] for r in first} == {"0"}
    resume = [
        "train.py",
        "fit",
        "--config",
        "conf/digits/ann.yaml",
        *tiny_overrides(root, epochs=2),
        "--ckpt_path",
        f"{root}/last",
    ]
    run_cli(*resume)
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == ["version_0"]
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert torch.load(best, weights_only=True)["epoch"] in (0, 1)
    # ... and appends to its metrics: every row logged before the resume is kept
    resumed = rows()
    assert {r["epoch"] for r in resumed} == {"0", "1"}
    assert [{k: v for k, v in r.items() if v} for r in resumed[: len(first)]] == [
        {k: v for k, v in r.items() if v} for r in first
    ]
    run_cli(*resume)  # resuming a finished run logs nothing new and deletes nothing
    assert len(rows()) >= len(resumed)


def test_sigterm_during_fit_saves_a_resumable_checkpoint_and_exits_1(tmp_path):
    root = tmp_path / "run"
    cmd = [
        sys.executable,
        "train.py",
        "fit",
        "--config",
        "conf/digits/ann.yaml",
        *tiny_overrides(root, epochs=50, batches=20),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.rglob("last.ckpt")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, output[-2000:]
    saved = list(root.rglob("interrupted.ckpt"))
    assert saved and "interrupted: saved" in output
    run_cli(
        "train.py",
        "fit",
        "--config",
        "conf/digits/ann.yaml",
        *tiny_overrides(root, epochs=3, batches=20),
        "--ckpt_path",
        str(saved[0]),
    )


def test_sigterm_during_the_evaluation_stops_within_seconds_and_keeps_what_finished(dense_ann_ckpt, tmp_path):
    root = tmp_path / "ev"
    cmd = [
        sys.executable,
        "train.py",
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--ckpt_path",
        dense_ann_ckpt,
        *tiny_overrides(root),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    lines = []
    for line in proc.stdout:  # the evaluation has started
        lines.append(line)
        if "[AttackEvaluation]" in line and "test samples" in line:
            break
    time.sleep(5)  # into the attacks (a loaded machine may still be on the clean pass 2 s in: nothing finished then)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    output = "".join(lines) + proc.communicate(timeout=120)[0]
    assert time.time() - sent < 30 and proc.returncode == 1, output[-2000:]
    attacks = json.loads(next(root.rglob("attacks.json")).read_text())
    assert attacks["interrupted"].startswith("interrupted") and "finished part is written" in output
