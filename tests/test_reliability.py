"""Resume, safe loading, determinism, clear errors: the paths researchers hit on shared machines."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY_SNN, ckpt, run_main, tiny_overrides
from srsnn.errors import UserError
from srsnn.io.checkpoints import read_checkpoint

pytestmark = pytest.mark.slow


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _fit_cmd(root: Path, config="conf/digits/ann.yaml", epochs=3, extra=()):
    return [
        sys.executable,
        "train.py",
        "fit",
        "--config",
        config,
        *tiny_overrides(root, epochs=epochs, batches=8),
        "--trainer.limit_val_batches",
        "1",
        *extra,
    ]


SNN = [*TINY_SNN, "--model.init_args.eval_steps", "2"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "sig, stage", [(signal.SIGTERM, "ann"), (signal.SIGKILL, "snn"), (signal.SIGKILL, "prune_hydra")]
)
def test_killed_fit_resumes_to_the_same_weights(tmp_path, sig, stage, dense_ann_ckpt):
    extra = {
        "ann": [],
        "snn": SNN + ["--model.init_args.ann_checkpoint", dense_ann_ckpt],
        "prune_hydra": [
            "--model.init_args.init_from",
            dense_ann_ckpt,
            "--trainer.callbacks.init_args.score_epochs",
            "1",
        ],
    }[stage]
    cmd = lambda root: _fit_cmd(root, f"conf/digits/{stage}.yaml", extra=extra)
    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), cwd=ROOT, check=True, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd(run), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(run.rglob("last.ckpt")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(sig)
    proc.wait()
    last = ckpt(run)
    read_checkpoint(last)  # never a truncated checkpoint: loads with weights_only
    subprocess.run(cmd(run) + ["--ckpt_path", last], cwd=ROOT, check=True, capture_output=True)
    a, b = _state(ckpt(ref)), _state(ckpt(run))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_config_and_seed_give_bit_identical_metrics(tmp_path):
    for name in ("a", "b"):
        subprocess.run(_fit_cmd(tmp_path / name, epochs=2), cwd=ROOT, check=True, capture_output=True)
    ma = sorted((tmp_path / "a").rglob("metrics.csv"))[0].read_text()
    mb = sorted((tmp_path / "b").rglob("metrics.csv"))[0].read_text()
    assert ma == mb and "val/pgd_acc_single_path" in ma


class Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload(str(marker))}, evil)
    with pytest.raises(UserError, match="refused to load"):
        read_checkpoint(str(evil))
    out = run_main(
        "fit",
        "--config",
        "conf/digits/ann.yaml",
        *tiny_overrides(tmp_path / "r"),
        "--model.init_args.init_from",
        str(evil),
    )
    assert out.returncode == 2 and "refused to load" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a PyTorch checkpoint .it holds an empty file"),
        (b"seed_everything: 0\nmodel: {}\n", "not a PyTorch checkpoint .it holds text"),
        (bytes(range(7, 250, 3)), "not a PyTorch checkpoint .it holds some other"),
        (b"PK\x03\x04 a truncated zip", "not a readable PyTorch checkpoint"),
    ],
)
def test_empty_or_corrupt_checkpoint_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_checkpoint(str(bad))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.init_args.epsilon", "-0.1"], "epsilon must be in"),
        (["--model.init_args.epsilon", "2/0"], "cannot read"),
        (["--data.init_args.batch_size", "0"], "data.batch_size (datamodules.Digits): Not of type PositiveInt"),
        (["--data.init_args.classes", "11"], "data.classes (datamodules.Digits): Not of type DigitClasses"),
        (
            ["--trainer.callbacks+=callbacks.HydraPruning", "--trainer.callbacks.init_args.sparsity", "1.0"],
            "trainer.callbacks.sparsity (callbacks.HydraPruning): Not of type FractionBelowOne",
        ),
        (["--model.init_args.optimizer.init_args.lr", "1e12"], "No checkpoint was saved before this point"),
    ],
)
def test_bad_values_are_one_clear_error(args, message, tmp_path):
    out = run_main("fit", "--config", "conf/digits/ann.yaml", *tiny_overrides(tmp_path), *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model.init_args.num_steps", "0"],
            "model.num_steps (lightning_modules.ConvertedSNN): Not of type PositiveInt",
        ),
        (
            ["--model.init_args.percentile", "0"],
            "model.percentile (lightning_modules.ConvertedSNN): Not of type Percentile",
        ),
        (["--model.init_args.percentile", "101"], "(given 101)"),
        (["--model.init_args.calib_order", "backwards"], "model.calib_order (lightning_modules.ConvertedSNN): "),
        (
            ["--model.init_args.schedule", "depth"],
            "model.schedule (lightning_modules.ConvertedSNN): ",
        ),
    ],
)
def test_bad_snn_values_are_one_clear_error(args, message, tmp_path):
    out = run_main("validate", "--config", "conf/digits/snn.yaml", *tiny_overrides(tmp_path), *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_ann_checkpoint_of_another_architecture_names_what_differs(dense_ann_ckpt, tmp_path):
    out = run_main(
        "validate",
        "--config",
        "conf/digits/snn.yaml",
        *tiny_overrides(tmp_path),
        "--model.init_args.ann_checkpoint",
        dense_ann_ckpt,
        "--model.init_args.net.init_args.width",
        "8",
    )
    assert out.returncode == 2 and "does not fit model.net" in out.stderr and "shape mismatches" in out.stderr


def test_existing_run_folder_is_never_overwritten(tmp_path):
    args = [
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert run_main("fit", "--config", "conf/digits/ann.yaml", *args).returncode == 0
    before = (tmp_path / "config.yaml").read_text()
    out = run_main("fit", "--config", "conf/digits/ann.yaml", *args, "--model.init_args.beta", "3")
    assert out.returncode == 2 and "already exists" in out.stderr
    assert (tmp_path / "config.yaml").read_text() == before


def test_a_file_that_is_not_a_checkpoint_says_so_through_the_cli(tmp_path):
    out = run_main(
        "test", "--config", "conf/digits/ann.yaml", "--ckpt_path", "conf/digits/ann.yaml", *tiny_overrides(tmp_path)
    )
    assert out.returncode == 2 and "is not a PyTorch checkpoint (it holds text" in out.stderr
    assert "Traceback" not in out.stderr and "could run code" not in out.stderr


def test_a_bare_state_dict_at_ckpt_path_is_one_error_naming_init_from(dense_ann_ckpt, tmp_path):
    """A user's own weights (torch.save(model.state_dict())) given where a train.py checkpoint belongs."""
    sd = {k[len("net.") :]: v for k, v in torch.load(dense_ann_ckpt, weights_only=True)["state_dict"].items()}
    torch.save(sd, tmp_path / "weights.pt")
    out = run_main(
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--ckpt_path",
        str(tmp_path / "weights.pt"),
        *tiny_overrides(tmp_path / "run"),
    )
    assert out.returncode == 2 and "holds weights only (a state dict)" in out.stderr
    assert "--model.init_args.init_from" in out.stderr and "Traceback" not in out.stderr
    assert "pytorch-lightning_version" not in out.stderr


def test_a_config_error_names_the_key_first(tmp_path):
    out = run_main(
        "fit", "--config", "conf/digits/ann.yaml", "--model.init_args.no_such_key", "1", *tiny_overrides(tmp_path)
    )
    assert out.returncode == 2 and out.stderr.startswith("error: invalid configuration:")
    assert "no_such_key" in out.stderr.splitlines()[0] and len(out.stderr.splitlines()) <= 3


def test_a_checkpoint_of_the_other_kind_or_network_is_one_error_at_ckpt_path(dense_ann_ckpt, tmp_path):
    # an ANN checkpoint under the SNN config: refused (Lightning would take the checkpoint's class and run the ANN)
    out = run_main("test", "--config", "conf/digits/snn.yaml", "--ckpt_path", dense_ann_ckpt, *tiny_overrides(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "(lightning_modules.RobustANN) is an ANN checkpoint, but SNN weights are needed here" in out.stderr
    assert "the config builds lightning_modules.ConvertedSNN" in out.stderr
    assert not list(tmp_path.rglob("attacks.json"))  # nothing evaluated under the wrong kind
    # the same kind, another network: one line naming both sides and what differs
    out = run_main(
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--ckpt_path",
        dense_ann_ckpt,
        "--model.init_args.net.init_args.width",
        "8",
        *tiny_overrides(tmp_path),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    line = next(x for x in out.stderr.splitlines() if x.startswith("error:"))
    assert "the checkpoint's network (SmallCNN) does not fit the network the config builds (SmallCNN)" in line
    assert "shape mismatches" in line and "config.yaml" in line


def test_a_run_exports_from_its_own_saved_config(dense_ann_ckpt, tmp_path):
    import export

    run = Path(dense_ann_ckpt).parents[1]  # lightning_logs/version_0: config.yaml and checkpoints/
    assert (
        export.main(
            ["--config", str(run / "config.yaml"), "--ckpt_path", str(run), "--out", str(tmp_path / "m.safetensors")]
        )
        == 0
    )
    assert (tmp_path / "m.safetensors").stat().st_size > 0
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="is not a YAML mapping of options"):
        from lightning_modules.loading import build_from_config

        build_from_config(str(bad))
    out = run_main("fit", "--config", str(bad), *tiny_overrides(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "mapping" in out.stderr, out.stderr[-2000:]


KILLED_WHILE_SAVING = """
import os, sys, torch
import fsspec.implementations.local as local
from lightning.pytorch.plugins.io import TorchCheckpointIO

real_write = local.LocalFileOpener.write
def write_half_then_die(self, data):
    real_write(self, bytes(data)[: len(data) // 2])
    self.flush()
    os._exit(9)  # killed mid-write, as by SIGKILL: no cleanup runs
local.LocalFileOpener.write = write_half_then_die
TorchCheckpointIO().save_checkpoint({"epoch": 2, "w": torch.full((100_000,), 2.0)}, sys.argv[1])
"""


def test_a_kill_while_saving_a_checkpoint_leaves_the_previous_one(tmp_path):
    """Lightning's checkpoint writer (the one every fit here uses) writes through an fsspec transaction."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    last = tmp_path / "last.ckpt"
    TorchCheckpointIO().save_checkpoint({"epoch": 1, "w": torch.ones(100_000)}, last)
    out = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(last)], capture_output=True, text=True)
    assert out.returncode == 9, out.stderr[-2000:]
    kept = read_checkpoint(str(last))
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(100_000))
