"""Any LightningDataModule works through train.py: ANN fit, conversion (calibration from train_dataloader()),
SNN fit and SNN test with the evaluation callbacks (test set from test_dataloader())."""

import json

import pytest

from helpers import TINY_SNN, ckpt, run_cli, tiny_eval, tiny_overrides

NET = [
    "--model.init_args.net.init_args.num_classes",
    "5",
    "--model.init_args.net.init_args.in_channels",
    "3",
    "--model.init_args.net.init_args.input_size",
    "16",
]


@pytest.mark.e2e
def test_a_plain_lightning_datamodule_runs_the_whole_pipeline(tmp_path):
    data = ["--data", "tests.plain_data.PlainData"]
    run_cli("train.py", "fit", "--config", "conf/digits/ann.yaml", *data, *NET, *tiny_overrides(tmp_path / "ann"))
    ann = ckpt(tmp_path / "ann")
    snn_args = [
        "--config",
        "conf/digits/snn.yaml",
        *data,
        *NET,
        *TINY_SNN,
    ]
    run_cli("train.py", "fit", *snn_args, "--model.init_args.ann_checkpoint", ann, *tiny_overrides(tmp_path / "snn"))
    run_cli(
        "train.py",
        "test",
        *snn_args,
        "--config",
        tiny_eval(tmp_path),
        "--ckpt_path",
        ckpt(tmp_path / "snn"),
        *tiny_overrides(tmp_path / "test"),
    )
    attacks = json.loads(open(ckpt(tmp_path / "test", "attacks.json")).read())
    assert attacks["num_samples"] == 10 and attacks["num_classes"] == 5 and attacks["kind"] == "snn"
    energy = json.loads(open(ckpt(tmp_path / "test", "energy.json")).read())
    assert energy["num_samples"] == 10 and energy["total"]["synops"] > 0
    # every neuron layer and weight layer the table shows has its readable name (conv1, conv1 IF, ...)
    assert set(energy["layers"]) | set(energy["synops_by_layer"]) <= set(energy["labels"])


def test_a_plain_datamodule_that_does_not_fit_the_network_is_one_clear_error(tmp_path):
    data = ["--data", "tests.plain_data.PlainData"]
    out = run_cli("train.py", "fit", "--config", "conf/digits/ann.yaml", *data, *tiny_overrides(tmp_path), check=False)
    assert out.returncode == 2 and "cannot take the data's images of shape (3, 16, 16)" in out.stderr
    assert "Traceback" not in out.stderr
