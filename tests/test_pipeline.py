"""The whole pipeline, tiny, through pipeline.py: all stages, skip on re-run, resume after a kill."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, TINY_SNN

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # `make test-e2e`, a file per worker: the reference run is built once

FAST = [
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def _tiny_configs(tmp: Path, pruning: bool = True) -> Path:
    """Copies of the digits configs with a small evaluation, and a pipeline over them."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("snn", "prune_hydra"):  # overlays on ann.yaml (`config: ann.yaml`): they take the tiny one below
        out[name] = tmp / f"{name}.yaml"
        out[name].write_text((ROOT / f"conf/digits/{name}.yaml").read_text())
    cfg = yaml.safe_load((ROOT / "conf/digits/ann.yaml").read_text())
    cfg["config"] = str((ROOT / "conf/digits" / cfg["config"]).resolve())  # its include, from the copy's folder
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"] == "callbacks.AttackEvaluation":
            cb["init_args"].update(
                attacks=[{"name": "pgd", "steps": 2}],
                epsilons=[0.1, 0.2],
                num_samples=20,
                batch_size=20,
                adaptive=dict(top_k=1, steps=2, max_targets=2, square_queries=20, check_rounds=1),
            )
        if cb["class_path"] == "callbacks.SpikeEnergyMonitor":
            cb.setdefault("init_args", {})["num_samples"] = 20
    out["ann"] = tmp / "ann.yaml"
    out["ann"].write_text(yaml.safe_dump(cfg))
    snn_args = [*TINY_SNN, "--model.init_args.eval_steps", "2"]
    pipe = {
        "title": "tiny",
        "run_dir": str(tmp / "run"),
        "results": str(tmp / "results"),
        "ann": str(out["ann"]),
        "snn": str(out["snn"]),
        "pruning": [{"name": "hydra", "config": str(out["prune_hydra"]), "sparsity": [0.9]}] if pruning else [],
        **({"t_sweep": {"of": "hydra90", "num_steps": [3]}, "converted_test": ["hydra90"]} if pruning else {}),
        "args": {
            "ann": ["--trainer.max_epochs", "2", *FAST],
            "ann_test": FAST,
            "prune": ["--trainer.max_epochs", "2", "--trainer.callbacks.init_args.score_epochs", "1", *FAST],
            "snn": ["--trainer.max_epochs", "2", *snn_args, *FAST],
            "snn_test": [*snn_args, *FAST],
        },
    }
    # the T sweep passes its own num_steps after these: the last value wins
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipe))
    return path


def _run(cfg, extra=(), **kw):
    return subprocess.run(
        [sys.executable, "pipeline.py", "--config", str(cfg), *extra], cwd=ROOT, capture_output=True, text=True, **kw
    )


@pytest.fixture(scope="session")  # not "module": xdist may interleave other modules' tests on this worker
def reference(tmp_path_factory) -> Path:
    """One uninterrupted tiny pipeline run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("pipeline")
    out = _run(_tiny_configs(tmp))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp


def test_tiny_pipeline_end_to_end_then_skip(reference):
    tmp_path, cfg = reference, reference / "pipeline.yaml"
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert [r["run"] for r in report] == [
        "ann_test",
        "snn_test",
        "hydra90_ann_test",
        "hydra90_snn_test",
        "hydra90_T3_snn_test",
        "hydra90_snn_converted_test",
    ]
    sparse = [r for r in report if r["run"].startswith("hydra")]
    assert all(abs(r["sparsity"] - 0.9) < 0.01 for r in sparse)
    assert report[3]["E_dense/E_sparse"] is not None and report[3]["synops"] < report[1]["synops"]
    assert [r["T"] for r in report if r["kind"] == "snn"] == [2, 2, 3, 2] and [r["method"] for r in report[:4]] == [
        "dense",
        "dense",
        "HYDRA",
        "HYDRA",
    ]
    # every SNN's converted-only validation (its fit's sanity check) beside the fine-tuned one
    assert all(
        r["converted_val_acc"] is not None and r["fit_val_acc"] is not None and r["fit_epochs"] == 2
        for r in report
        if r["kind"] == "snn" and not r["converted_only"]
    )
    assert report[5]["converted_only"] and report[5]["sparsity"] == report[3]["sparsity"]  # the same masks
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## The paper's claims, measured" in md and "## Time steps: hydra90 SNN at T = 2, 3" in md
    assert "## Conversion alone vs adversarial fine-tuning" in md and "| hydra90_snn_test | 2 |" in md
    for fig in ("robust_accuracy_vs_eps", "robust_vs_sparsity", "robust_vs_energy", "layers", "t_sweep"):
        assert (tmp_path / "run" / "report" / f"{fig}.png").exists(), fig
    # published to the pipeline's results folder: the report and every model's own evaluation
    assert (tmp_path / "results" / "report.md").read_text() == md
    assert sorted(p.stem for p in (tmp_path / "results" / "evaluation").glob("*.md")) == sorted(
        r["run"] for r in report
    )
    assert sorted(
        p.name.split(".")[0] for p in (tmp_path / "results" / "evaluation").glob("*.per_sample.json")
    ) == sorted(r["run"] for r in report)
    # wall time and peak memory of every stage
    rows = [r.split("|") for r in (tmp_path / "run" / "report" / "timings.md").read_text().splitlines()[2:-1]]
    assert [r[1].strip() for r in rows][:2] == ["ann", "ann_test"] and len(rows) == 11
    assert all(float(r[2]) > 0 and 100 < float(r[3]) < 24_000 for r in rows)  # a Python + torch process: > 100 MiB
    # what each stage is (method, sparsity, T, converted only) is written beside it; the report reads that, not names
    st = json.loads((tmp_path / "run" / "hydra90_T3_snn_test" / "stage.json").read_text())
    assert (st["method"], st["sparsity"], st["T"], st["converted_only"], st["kind"]) == ("hydra", 0.9, 3, False, "snn")
    assert json.loads((tmp_path / "run" / "hydra90_snn_converted_test" / "stage.json").read_text())["converted_only"]
    import shutil

    shutil.copytree(tmp_path / "run" / "hydra90_T3_snn_test", tmp_path / "renamed" / "my model")
    out = subprocess.run(
        [
            sys.executable,
            "report.py",
            str(tmp_path / "renamed" / "my model"),
            "--out",
            str(tmp_path / "renamed" / "report"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads((tmp_path / "renamed" / "report" / "report.json").read_text())[0]
    assert (row["method"], row["family"], row["converted_only"]) == ("HYDRA", "hydra90", False)
    again = _run(cfg)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == 11


def _copy(reference: Path, dest: Path, stages=None) -> Path:
    """The reference run (or some of its stages) and its configs under ``dest``: identities do not depend on paths."""
    import shutil

    shutil.copytree(
        reference,
        dest,
        ignore=None
        if stages is None
        else lambda d, names: [n for n in names if Path(d) == reference / "run" and n not in stages],
    )
    for f in dest.glob("*.yaml"):
        f.write_text(f.read_text().replace(str(reference), str(dest)))
    return dest


def test_a_changed_config_or_code_makes_its_stages_and_those_downstream_stale(reference, tmp_path):
    from srsnn_cli import pipeline

    reference = _copy(reference, tmp_path / "copy")
    cfg = yaml.safe_load((reference / "pipeline.yaml").read_text())
    snn_yaml = Path(cfg["snn"])
    snn_yaml.write_text(snn_yaml.read_text() + "\n# edited\n")  # any edit of the file counts
    try:
        out = _run(reference / "pipeline.yaml", extra=["--dry_run"])
    finally:
        snn_yaml.write_text(snn_yaml.read_text().replace("\n# edited\n", ""))
    lines = [l for l in out.stdout.splitlines() if l.startswith("== stage")]
    assert out.returncode == 0 and len(lines) == 11, out.stdout + out.stderr
    stale = [l.split(":")[1].split()[0] for l in lines if "stale (its config file changed" in l]
    assert stale == [
        "snn",
        "snn_test",
        "hydra90_snn",
        "hydra90_snn_test",
        "hydra90_T3_snn",
        "hydra90_T3_snn_test",
        "hydra90_snn_converted_test",
    ], lines
    assert sum("complete, skipped" in l for l in lines) == 4
    # the configs that include ann.yaml (`config: ann.yaml`) change with it: every stage is stale
    ann_yaml = Path(cfg["ann"])
    ann_yaml.write_text(ann_yaml.read_text() + "\n# edited\n")
    try:
        out = _run(reference / "pipeline.yaml", extra=["--dry_run"])
    finally:
        ann_yaml.write_text(ann_yaml.read_text().replace("\n# edited\n", ""))
    assert out.stdout.count("stale (its config file changed") == 11, out.stdout
    # a stage re-run for real: the arguments of the ANN's test changed -> it and the pruned ANN's test re-run,
    # the old results are kept aside
    cfg["args"]["ann_test"] = cfg["args"]["ann_test"] + ["--trainer.limit_test_batches", "2"]
    edited = reference / "pipeline_edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    out = _run(edited)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (
        out.stdout.count("stale (its command changed): re-running") == 2 and out.stdout.count("complete, skipped") == 9
    )
    assert (reference / "run" / "ann_test.stale-1" / "DONE").exists()
    src = tmp_path / "src"  # the code version is a hash of the sources: an edited file changes it
    for entry in pipeline.CODE:
        (src / entry).parent.mkdir(parents=True, exist_ok=True)
        (src / entry).write_text("x = 1\n") if entry.endswith(".py") else (src / entry).mkdir(exist_ok=True)
    before = pipeline.code_version(str(src))
    (src / "srsnn" / "snn" / "neurons.py").write_text("x = 2\n")
    assert pipeline.code_version(str(src)) != before


def test_killed_pipeline_resumes_to_the_same_result(reference, tmp_path):
    # the dense branch (the resume logic is the same), its completed ANN stages copied from the reference run
    _copy(reference, tmp_path / "k", stages={"ann", "ann_test"})
    cfg = _tiny_configs(tmp_path / "k", pruning=False)
    proc = subprocess.Popen(
        [sys.executable, "pipeline.py", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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
    assert len(b) == 2
    for ra, rb in zip(strip(a)[:2], strip(b)):
        assert {k: (v, rb.get(k)) for k, v in ra.items() if v != rb.get(k)} == {}, ra["run"]


def test_one_pipeline_per_run_folder_and_a_dead_owners_folder_is_taken_over(reference, tmp_path):
    dest = _copy(reference, tmp_path / "copy")
    lock, info, cfg = dest / "run" / "pipeline.lock", dest / "run" / "pipeline.owner.json", dest / "pipeline.yaml"
    hold = (  # another pipeline: it holds the OS lock and names itself, then dies without cleaning up
        f"import filelock, json, os, time; lock = filelock.FileLock({str(lock)!r}); lock.acquire(); "
        f"open({str(info)!r}, 'w').write(json.dumps({{'pid': os.getpid(), 'started': 'then', 'command': 'x'}})); "
        "print('locked', flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
        out = _run(cfg)
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert f"error: another pipeline is running in {dest / 'run'} (pid {owner.pid}" in out.stderr
        assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before  # nothing touched
    finally:
        owner.kill()
        owner.wait()
    out = _run(cfg)  # its owner is gone: the system released the lock
    assert out.returncode == 0 and "taking over the run folder" in out.stdout
    assert out.stdout.count("complete, skipped") == 11
    assert not lock.exists() and not info.exists()  # released at the end


def test_results_are_published_only_for_the_recipe_as_written():
    from srsnn_cli import pipeline

    assert pipeline.publishes([], False) and pipeline.publishes(["--trainer.max_epochs", "1"], True)
    assert not pipeline.publishes(["--trainer.max_epochs", "1"], False)


def test_seeds_run_apart_and_the_report_gives_mean_and_spread(reference, tmp_path):
    """Two seeds of the dense chain: seed 0 (explicit) gives the reference run's per-sample records byte for byte (the
    configs' seed is 0: same machine and seed, same numbers); the report gives each number over the seeds, publishes
    every seed's records, and a re-run skips every stage."""
    cfg = _tiny_configs(tmp_path, pruning=False)
    pipe = yaml.safe_load(cfg.read_text())
    pipe["seeds"] = [0, 1]
    cfg.write_text(yaml.safe_dump(pipe))
    out = _run(cfg)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    samples = lambda p: json.loads(p.read_text())["samples"]
    published = tmp_path / "results" / "evaluation"
    assert samples(published / "seed0" / "ann_test.per_sample.json") == samples(
        reference / "results" / "evaluation" / "ann_test.per_sample.json"
    )
    rows = json.loads((tmp_path / "results" / "report.json").read_text())
    assert [r["run"] for r in rows] == ["ann_test", "snn_test"] and all(r["seeds"] == [0, 1] for r in rows)
    for r in rows:  # each number the mean of the seeds' numbers, with their range where they differ
        worst = [s["worst@0.1"] for s in r["per_seed"]]
        assert r["worst@0.1"] == pytest.approx(sum(worst) / 2)
        assert r["spread"].get("worst@0.1", [worst[0]] * 2) == [min(worst), max(worst)]
    assert sorted(p.relative_to(published).as_posix() for p in published.rglob("*.per_sample.json")) == [
        f"seed{k}/{s}.per_sample.json" for k in (0, 1) for s in ("ann_test", "snn_test")
    ]
    assert "Over 2 seeds (0, 1)" in (tmp_path / "results" / "report.md").read_text()
    again = _run(cfg)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == 8


def test_your_own_snntorch_snn_as_pipeline_stages_beside_the_rest(reference, tmp_path):
    """``native:``: an snnTorch net evaluated, fine-tuned and evaluated again as pipeline stages; reported beside the
    converted SNNs, never the dense SNN of the energy ratio nor a model of the paper's claims; its weights file is
    part of its stages' identity."""
    import torch

    sys.path.insert(0, str(ROOT))
    from examples.tutorial_snn import TutorialSNN

    dest = _copy(reference, tmp_path / "copy")
    weights = tmp_path / "mynet.pt"
    torch.manual_seed(0)
    torch.save(TutorialSNN(num_steps=4).state_dict(), weights)
    cfg = yaml.safe_load((dest / "pipeline.yaml").read_text())
    args = ["--model.init_args.weights", str(weights), "--model.init_args.net.init_args.num_steps", "4"]
    args += ["--evaluation.num_samples", "12", "--evaluation.adaptive", "quick", "--trainer.max_epochs", "1", *FAST]
    cfg["native"] = [
        {"name": "mine", "config": str(ROOT / "conf/digits/native_snn.yaml"), "args": args, "fine_tune": True}
    ]
    (dest / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    out = _run(dest / "pipeline.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("complete, skipped") == 11  # the reference's stages are reused
    rows = {r["run"]: r for r in json.loads((dest / "run" / "report" / "report.json").read_text())}
    mine, tuned = rows["mine_snn_test"], rows["mine_tuned_snn_test"]
    assert (mine["method"], mine["kind"], tuned["method"]) == ("native", "snn", "native") and mine["samples"] == 12
    assert rows["hydra90_snn_test"]["E_dense/E_sparse"] == pytest.approx(
        rows["snn_test"]["synops"] / rows["hydra90_snn_test"]["synops"]
    )
    claims = (dest / "run" / "report" / "report.md").read_text().split("## The paper's claims")[1]
    assert "mine" not in claims.split("\n## ")[0]
    torch.save(TutorialSNN(num_steps=4).state_dict(), weights)  # other weights: its stages are stale, nothing else
    out = _run(dest / "pipeline.yaml", extra=["--dry_run"])
    assert out.stdout.count("stale (its config file changed") == 3 and out.stdout.count("complete, skipped") == 11
