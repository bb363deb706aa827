"""The whole pipeline, tiny, through pipeline.py: all stages, skip on re-run, resume after a kill."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]  # one worker: the shared reference run

FAST = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _tiny_configs(tmp: Path, pruning: bool = True) -> Path:
    """Copies of the digits configs with a small evaluation, and a pipeline over them."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("ann", "snn", "prune_hydra"):
        cfg = yaml.safe_load((ROOT / f"conf/digits/{name}.yaml").read_text())
        for cb in cfg["trainer"]["callbacks"]:
            if cb["class_path"] == "callbacks.AttackEvaluation":
                cb["init_args"].update(attacks=[{"name": "pgd", "steps": 2}], epsilons=[0.1, 0.2], num_samples=20,
                                       batch_size=20, adaptive=dict(top_k=1, steps=2, max_targets=2,
                                                                    square_queries=20, check_rounds=1))
            if cb["class_path"] == "callbacks.SpikeEnergyMonitor":
                cb["init_args"]["num_samples"] = 20
        out[name] = tmp / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(cfg))
    snn_args = ["--model.init_args.num_steps", "2", "--model.init_args.calib_steps", "4",
                "--model.init_args.calib_batches", "2", "--model.init_args.eval_steps", "2"]
    pipe = {"title": "tiny", "run_dir": str(tmp / "run"), "ann": str(out["ann"]), "snn": str(out["snn"]),
            "pruning": [{"name": "hydra", "config": str(out["prune_hydra"]), "sparsity": [0.9]}] if pruning else [],
            "args": {"ann": ["--trainer.max_epochs", "2", *FAST], "ann_test": FAST,
                     "prune": ["--trainer.max_epochs", "2", "--trainer.callbacks.init_args.score_epochs", "1", *FAST],
                     "snn": ["--trainer.max_epochs", "2", *snn_args, *FAST], "snn_test": [*snn_args, *FAST]}}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipe))
    return path


def _run(cfg, **kw):
    return subprocess.run([sys.executable, "pipeline.py", "--config", str(cfg)], cwd=ROOT, capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted tiny pipeline run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("pipeline")
    out = _run(_tiny_configs(tmp))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp


def test_tiny_pipeline_end_to_end_then_skip(reference):
    tmp_path, cfg = reference, reference / "pipeline.yaml"
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert [r["run"] for r in report] == ["ann_test", "snn_test", "hydra90_ann_test", "hydra90_snn_test"]
    sparse = [r for r in report if r["run"].startswith("hydra")]
    assert all(abs(r["sparsity"] - 0.9) < 0.01 for r in sparse)
    assert report[3]["E_dense/E_sparse"] is not None and report[3]["synops"] < report[1]["synops"]
    assert (tmp_path / "run" / "report" / "robust_accuracy_vs_eps.png").exists()
    # wall time and peak memory of every stage
    rows = [r.split("|") for r in (tmp_path / "run" / "report" / "timings.md").read_text().splitlines()[2:-1]]
    assert [r[1].strip() for r in rows][:2] == ["ann", "ann_test"] and len(rows) == 8
    assert all(float(r[2]) > 0 and 100 < float(r[3]) < 24_000 for r in rows)  # a Python + torch process: > 100 MiB
    again = _run(cfg)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == 8


def test_killed_pipeline_resumes_to_the_same_result(reference, tmp_path):
    cfg = _tiny_configs(tmp_path / "k", pruning=False)  # the dense branch: the resume logic is the same
    proc = subprocess.Popen([sys.executable, "pipeline.py", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    snn_dir = tmp_path / "k" / "run" / "snn"
    deadline = time.time() + 600
    while time.time() < deadline and not list(snn_dir.rglob("last.ckpt")) and proc.poll() is None:
        time.sleep(0.05)
    import os
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its running stage, mid-way through the SNN stage
    proc.wait()
    out = _run(cfg)
    assert out.returncode == 0, out.stderr[-3000:]
    a = json.loads((reference / "run" / "report" / "report.json").read_text())
    b = json.loads((tmp_path / "k" / "run" / "report" / "report.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("bytes", "eval_s_per_sample")} for r in rows]
    assert strip(a)[:2] == strip(b) and len(b) == 2
