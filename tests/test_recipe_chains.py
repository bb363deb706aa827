"""Every paper recipe's stage chain (ANN -> pruning -> SNN fine-tuning -> evaluation) runs through train.py at the
recipe's true input shape, on synthetic data, for a couple of batches: nothing but the data and the budget is
changed, so a recipe that stops building or running fails here (the settings themselves: test_recipes.py)."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from resolved_configs import resolve_nested

from helpers import ROOT, ckpt, run_main, tiny_eval

pytestmark = [pytest.mark.slow, pytest.mark.recipes]  # `make test-recipes` (run by .ci/run after `make test`)

RECIPES = ["cifar10", "cifar100", "tinyimagenet", "svhn"]
# SRSNN_TEST_DEVICE=cuda (make gpu-check): the same chains on the GPU
DEVICE = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"] if os.environ.get("SRSNN_TEST_DEVICE") else []
SMALL = [
    *DEVICE,
    "--trainer.max_epochs",
    "1",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
ANN = ["--model.init_args.attack_steps", "1", "--model.init_args.eval_steps", "1"]
SNN = [
    "--model.init_args.num_steps",
    "2",
    "--model.init_args.calib_batches",
    "1",
    "--model.init_args.calib_batch_size",
    "2",
    "--model.init_args.calib_steps",
    "2",
    "--model.init_args.eval_steps",
    "1",
]


def _ok(out):
    assert out.returncode == 0, out.stderr[-4000:]
    return out


@pytest.mark.parametrize("dataset", RECIPES)
def test_recipe_chain_runs_at_its_true_input_shape(dataset, tmp_path):
    pipe = yaml.safe_load((ROOT / f"conf/{dataset}/pipeline.yaml").read_text())
    # the network's data arguments as train.py resolves them (from the recipe's own datamodule)
    net = resolve_nested(pipe["ann"])["model"]["init_args"]["net"]["init_args"]
    shape = [net["in_channels"], net["input_size"], net["input_size"]]
    data = [
        "--data.class_path",
        "datamodules.Synthetic",
        "--data.init_args.num_classes",
        str(net["num_classes"]),
        "--data.init_args.input_shape",
        json.dumps(shape),
        "--data.init_args.size",
        "16",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.num_workers",
        "0",
    ]
    prune = next((p for p in pipe["pruning"] if p["name"] == "hydra"), pipe["pruning"][0])
    scores = ["--trainer.callbacks.init_args.score_epochs", "1"] if prune["name"] in ("hydra", "harp") else []
    root = lambda stage: ["--trainer.default_root_dir", str(tmp_path / stage)]
    _ok(run_main("fit", "--config", pipe["ann"], *data, *ANN, *SMALL, *root("ann")))
    _ok(
        run_main(
            "fit",
            *[
                arg
                for c in ([prune["config"]] if isinstance(prune["config"], str) else prune["config"])
                for arg in ("--config", c)
            ],
            "--model.init_args.init_from",
            str(tmp_path / "ann"),
            *data,
            *ANN,
            *SMALL,
            "--trainer.max_epochs",
            "2",
            *scores,
            "--trainer.callbacks.init_args.sparsity",
            str(max(prune["sparsity"])),
            *root("prune"),
        )
    )
    _ok(
        run_main(
            "fit",
            "--config",
            pipe["snn"],
            "--model.init_args.ann_checkpoint",
            str(tmp_path / "prune"),
            *data,
            *SNN,
            *SMALL,
            *root("snn"),
        )
    )
    _ok(
        run_main(
            "test",
            "--config",
            pipe["snn"],
            "--config",
            tiny_eval(tmp_path),
            "--ckpt_path",
            str(tmp_path / "snn"),
            *data,
            *SNN,
            *SMALL,
            *root("test"),
        )
    )
    energy = json.loads(Path(ckpt(tmp_path / "test", "energy.json")).read_text())
    assert energy["total"]["synops"] > 0 and Path(ckpt(tmp_path / "test", "attacks.json")).exists()
    state = torch.load(ckpt(tmp_path / "snn"), map_location="cpu", weights_only=True)["state_dict"]
    masks = [v for k, v in state.items() if k.endswith("mask")]
    kept = sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert masks and abs(kept - (1 - max(prune["sparsity"]))) < 0.02, kept  # the pruned mask reached the SNN
