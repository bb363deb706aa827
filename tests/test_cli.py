"""Smoke tests through the real entry point, as a user runs it."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import ROOT, TINY_SNN, ckpt, run_cli, run_main, tiny_eval, tiny_overrides, tiny_recipe_fit

pytestmark = pytest.mark.slow


def _metrics(root: Path) -> str:
    return (sorted(Path(root).rglob("metrics.csv"))[-1]).read_text()


def test_ann_fit_then_test_from_its_checkpoint(dense_ann_ckpt, tmp_path):
    out = run_cli(
        "train.py",
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--config",
        tiny_eval(tmp_path),
        "--ckpt_path",
        dense_ann_ckpt,
        *tiny_overrides(tmp_path),
    )
    assert "test/acc" in out.stdout and "test/pgd_acc_single_path" in out.stdout
    assert sorted(tmp_path.rglob("config.yaml"))  # the resolved config is saved next to the run


def test_print_config_resolves_every_option():
    out = run_main("fit", "--config", "conf/digits/ann.yaml", "--print_config")
    assert "inference_mode: false" in out.stdout and "class_path: lightning_modules.RobustANN" in out.stdout


def _checkpoints(*args: str) -> list[dict]:
    out = run_main("fit", *args, "--print_config")
    assert out.returncode == 0, out.stderr[-2000:]
    return [
        c["init_args"]
        for c in yaml.safe_load(out.stdout)["trainer"]["callbacks"] or []
        if c["class_path"].endswith("ModelCheckpoint")
    ]


def test_every_fit_keeps_last_ckpt_without_its_config_spelling_it(tmp_path):
    # a stage config names only its own callbacks: the CLI puts the last.ckpt checkpoint first
    pruning = _checkpoints("--config", "conf/digits/prune_hydra.yaml")
    assert [(c["save_last"], c["monitor"]) for c in pruning] == [(True, None)]
    assert [c["monitor"] for c in _checkpoints("--config", "conf/digits/ann.yaml")] == [None, "val/pgd_acc_single_path"]
    own = tmp_path / "own.yaml"  # a config with its own last-saving checkpoint gets no second one
    own.write_text(
        "trainer.callbacks:\n  - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "    init_args: {save_last: true, every_n_epochs: 2}\n"
    )
    assert [c["every_n_epochs"] for c in _checkpoints("--config", "conf/digits/ann.yaml", "--config", str(own))] == [2]
    assert _checkpoints("--config", "conf/digits/prune_hydra.yaml", "--trainer.enable_checkpointing", "false") == []


def _net_args(*args: str) -> dict:
    out = run_main("fit", "--config", "conf/digits/ann.yaml", *args, "--print_config")
    assert out.returncode == 0, out.stderr[-2000:]
    return yaml.safe_load(out.stdout)["model"]["init_args"]["net"]["init_args"]


def test_the_networks_data_arguments_come_from_the_datamodule_unless_the_config_sets_them(tmp_path):
    new_data = [
        "--data",
        "datamodules.Synthetic",
        "--data.init_args.num_classes",
        "3",
        "--data.init_args.input_shape",
        "[2, 12, 12]",
    ]
    net = _net_args(*new_data)  # a new dataset: no network argument to type
    assert (net["num_classes"], net["in_channels"], net["input_size"]) == (3, 2, 12)
    assert (net["mean"], net["std"]) == ([0.0], [1.0])  # Synthetic's images are not normalised
    assert _net_args()["mean"] == [0.2] and _net_args()["input_size"] == 8  # the digits datamodule's own values
    assert _net_args(*new_data, "--model.init_args.net.init_args.num_classes", "7")["num_classes"] == 7  # set: kept
    # the filled values build the network that fits the data, and are what the run's saved config records
    out = run_main(
        "fit",
        "--config",
        "conf/digits/ann.yaml",
        *new_data,
        *tiny_overrides(tmp_path, batches=1),
        "--trainer.limit_val_batches",
        "1",
        "--model.init_args.attack_steps",
        "1",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    saved = yaml.safe_load(next(tmp_path.rglob("config.yaml")).read_text())["model"]["init_args"]["net"]["init_args"]
    assert (saved["num_classes"], saved["in_channels"], saved["input_size"]) == (3, 2, 12)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.init_args.objective", "tradez"], r"model\.objective \(lightning_modules\.RobustANN\):.*tradez"),
        (["--model.init_args.epsilon", "1.5"], "epsilon must be in \\[0, 1\\]"),
        (["--model.init_args.no_such_key", "1"], "no_such_key"),
        (["--model.init_args.init_from", "/nonexistent.ckpt"], "does not exist"),
        (["--model.init_args.net.init_args.num_classes", "7"], "has 7 outputs but the data has 10"),
    ],
)
def test_bad_input_is_one_clear_error(args, message, tmp_path):
    out = run_main("fit", "--config", "conf/digits/ann.yaml", *tiny_overrides(tmp_path), *args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    import re

    assert re.search(message, out.stderr), out.stderr[-2000:]


def test_cifar_offline_gives_the_clear_message(tmp_path):
    out = run_main(
        "fit",
        "--config",
        "conf/cifar10/vgg16_ann.yaml",
        "--trainer.fast_dev_run",
        "true",
        "--data.init_args.data_dir",
        str(tmp_path / "cifar"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "CIFAR10 was not found in" in out.stderr and "download true" in out.stderr


def test_cifar_code_path_runs_on_fake_files(tmp_path, monkeypatch):
    """Fake CIFAR-10 batches in torchvision's layout; the md5 check is the only thing bypassed."""
    import torchvision

    import train

    root = tmp_path / "cifar"
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump(
                {"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 20).tolist()},
                f,
            )
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr("sys.argv", ["train.py"])
    train.main(tiny_recipe_fit("conf/cifar10/vgg16_ann.yaml", root, tmp_path / "run"))


def test_snn_validate_fit_test_through_the_cli(dense_ann_ckpt, tmp_path):
    snn = ["--config", "conf/digits/snn.yaml", *TINY_SNN, "--model.init_args.eval_steps", "2"]
    ok = lambda out: out if out.returncode == 0 else pytest.fail(out.stderr[-3000:])
    out = ok(
        run_main("validate", *snn, "--model.init_args.ann_checkpoint", dense_ann_ckpt, *tiny_overrides(tmp_path / "v"))
    )
    assert "val/acc" in out.stdout and "val/firing_rate" in out.stdout
    # fine-tuning with the time-major schedule (digits' layers are tiny, so auto picks the layer one;
    # srsnn/snn/network.py)
    ok(
        run_main(
            "fit",
            *snn,
            "--model.init_args.ann_checkpoint",
            dense_ann_ckpt,
            "--model.init_args.schedule",
            "time",
            *tiny_overrides(tmp_path / "f"),
        )
    )
    out = ok(
        run_main(
            "test",
            *snn,
            "--config",
            tiny_eval(tmp_path),
            "--ckpt_path",
            ckpt(tmp_path / "f"),
            *tiny_overrides(tmp_path / "t"),
        )
    )
    assert "test/pgd_acc_single_path" in out.stdout and "test/robust_worst/eps=0.1" in out.stdout
    # an SNN checkpoint is not an ANN: one clear error
    out = run_main(
        "validate", *snn, "--model.init_args.ann_checkpoint", ckpt(tmp_path / "f"), *tiny_overrides(tmp_path / "bad")
    )
    assert (
        out.returncode == 2
        and "is an SNN checkpoint, but ANN weights are needed" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_snn_without_ann_or_checkpoint_says_what_to_pass(tmp_path):
    out = run_main("validate", "--config", "conf/digits/snn.yaml", *tiny_overrides(tmp_path))
    assert out.returncode == 2 and "ann_checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_a_count_of_one_batch_means_one_batch(tmp_path):
    """Lightning types ``limit_*_batches`` as float-or-int, so its CLI alone reads ``1`` as 100 % of the batches."""
    out = run_main(
        "fit",
        "--config",
        "conf/digits/ann.yaml",
        *tiny_overrides(tmp_path),
        "--trainer.limit_val_batches",
        "1",
        "--trainer.limit_train_batches=1",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "limit_val_batches=1)` was configured so 1 batch will be used" in out.stderr
    assert "limit_train_batches=1)` was configured so 1 batch per epoch" in out.stderr


def test_a_non_editable_install_runs_from_another_folder(tmp_path):
    """``pip install .`` (not -e): the console script finds every module and runs a fit outside the clone."""
    import shutil

    src = tmp_path / "src"  # a copy: the build must not write into the clone the other tests run from
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "results", "build", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    target = tmp_path / "site"
    run_cli(
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(src),
        cwd=tmp_path,
    )
    env = dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [
            sys.executable,
            str(target / "bin" / "srsnn-train"),
            "fit",
            "--config",
            str(ROOT / "conf/digits/ann.yaml"),
            *tiny_overrides(tmp_path / "run", batches=1),
            "--trainer.limit_val_batches",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: run folder" in out.stdout and list((tmp_path / "run").rglob("last.ckpt"))
