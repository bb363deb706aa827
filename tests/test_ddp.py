"""Two CPU processes (gloo) against one: SNN fine-tuning and the evaluation callbacks under DDP."""

import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_SNN, ckpt, run_cli, tiny_overrides

# a second --config: only the evaluation callbacks, deterministic attacks (no random start) on an odd-sized
# subset, so the two ranks get unequal shards (16 / 15 samples, 2 batches each of different sizes)
EVAL = """
trainer:
  callbacks:
    - class_path: callbacks.AttackEvaluation
      init_args:
        attacks: [{name: fgsm}, {name: pgd, steps: 3, random_start: false}]
        epsilons: [0.1, 0.2]
        num_samples: 31
        batch_size: 8
        adaptive: false
        audit: true
    - class_path: callbacks.SpikeEnergyMonitor
      init_args: {num_samples: 31, batch_size: 8}
"""
SNN = [
    "--config",
    "conf/digits/snn.yaml",
    *TINY_SNN,
    "--model.init_args.eval_steps",
    "2",
]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def _evaluate(root: Path, cfg: Path, ckpt_path: str, ddp: bool) -> tuple[dict, dict]:
    run_cli(
        "train.py",
        "test",
        *SNN,
        "--config",
        str(cfg),
        "--ckpt_path",
        ckpt_path,
        *tiny_overrides(root),
        *(DDP if ddp else ["--trainer.accelerator", "cpu"]),
    )
    out = Path(ckpt(root, "attacks.json")).parent
    assert len(list(root.rglob("attacks.json"))) == 1  # written once, by rank 0
    return json.loads((out / "attacks.json").read_text()), json.loads((out / "energy.json").read_text())


@pytest.mark.e2e
def test_snn_fine_tuning_and_evaluation_under_ddp_match_one_process(dense_ann_ckpt, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(EVAL)
    fit = [*SNN, "--model.init_args.ann_checkpoint", dense_ann_ckpt]
    # same global batch (32) and number of optimizer steps: 2 ranks x 16 (BatchNorm statistics per rank:
    # torch's SyncBatchNorm is CUDA-only, and asking for it on CPU is one clear error)
    run_cli(
        "train.py",
        "fit",
        *fit,
        *tiny_overrides(tmp_path / "fit1", batches=4),
        "--data.init_args.batch_size",
        "32",
        "--trainer.accelerator",
        "cpu",
    )
    ddp = run_cli(
        "train.py",
        "fit",
        *fit,
        *tiny_overrides(tmp_path / "fit2", batches=4),
        "--data.init_args.batch_size",
        "16",
        *DDP,
    )
    # rank 0 alone calibrates; rank 1 receives its SNN (no rank repeats the conversion)
    log = ddp.stdout + ddp.stderr
    assert log.count("converted and calibrated") == 1 and "rank 0: converted and calibrated" in log, log[-3000:]
    assert "rank 1: received the converted SNN from rank 0" in log
    bad = run_cli(
        "train.py",
        "fit",
        *fit,
        *tiny_overrides(tmp_path / "bad"),
        "--trainer.sync_batchnorm",
        "true",
        *DDP,
        check=False,
    )
    assert bad.returncode == 2 and "sync_batchnorm needs GPUs" in bad.stderr and "Traceback" not in bad.stderr
    assert len(list((tmp_path / "fit2").rglob("metrics.csv"))) == 1  # logged from rank 0 only
    assert "train/loss" in next((tmp_path / "fit2").rglob("metrics.csv")).read_text()
    one, two = ckpt(tmp_path / "fit1"), ckpt(tmp_path / "fit2")
    # the same number of optimizer steps as one process with the whole global batch
    assert torch.load(two, weights_only=True)["global_step"] == torch.load(one, weights_only=True)["global_step"] == 4

    # the same checkpoint evaluated by 1 and by 2 processes: identical counts (each sample attacked once)
    a1, e1 = _evaluate(tmp_path / "ev1", cfg, two, ddp=False)
    a2, e2 = _evaluate(tmp_path / "ev2", cfg, two, ddp=True)
    assert a1["num_samples"] == a2["num_samples"] == 31
    assert a1["clean_acc"] == a2["clean_acc"] and a1["eps"] == a2["eps"]
    assert [c["check"] for c in a1["audit"]] == [c["check"] for c in a2["audit"]]
    assert e1["num_samples"] == e2["num_samples"] == 31
    for key in ("spikes", "synops", "dense_synops"):
        assert abs(e1["total"][key] - e2["total"][key]) <= 1e-6 * max(1.0, e1["total"][key])


class _Strategy:
    root_device = torch.device("cpu")

    def __init__(self, reply=None):
        self.sent, self.reply = [], reply

    def broadcast(self, obj, src=0):
        self.sent.append(obj)
        return self.reply if self.reply is not None else obj


class _Trainer:
    world_size = 2

    def __init__(self, rank, strategy):
        self.global_rank, self.strategy = rank, strategy


def test_a_conversion_failure_on_rank_0_stops_every_rank_with_its_message(dense_ann_ckpt):
    from lightning_modules import ConvertedSNN
    from srsnn.ann.architectures import SmallCNN
    from srsnn.errors import UserError

    module = ConvertedSNN(net=SmallCNN(input_size=8, width=16), num_steps=2)  # the fixture ANN's network
    rank0 = _Strategy()
    module._trainer = _Trainer(0, rank0)
    with pytest.raises(UserError, match="needs training images"):  # no datamodule: rank 0's conversion fails
        module.convert_from(dense_ann_ckpt, None)
    assert rank0.sent[0]["state"] is None and "needs training images" in rank0.sent[0]["error"]  # told the others
    module._trainer = _Trainer(1, _Strategy(reply=rank0.sent[0]))
    with pytest.raises(UserError, match="rank 0 failed to convert the ANN .*needs training images"):
        module.convert_from(dense_ann_ckpt, None)  # rank 1 does not wait for a state that never comes
    module._trainer = None


LONG_EVAL = """
trainer:
  callbacks:
    - class_path: callbacks.AttackEvaluation
      init_args: {epsilons: [0.05, 0.1, 0.2, 0.3], num_samples: 120, batch_size: 20, adaptive: strong}
"""


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


@pytest.mark.e2e
def test_sigterm_to_one_rank_stops_every_rank_cleanly_and_keeps_the_finished_epsilons(dense_ann_ckpt, tmp_path):
    """A preempted node: SIGTERM reaches rank 1 alone. Every rank stops at the same attack run, rank 0 writes the
    finished epsilons and says so, and the run exits non-zero, without an error from a half-received collective."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(LONG_EVAL)
    log = tmp_path / "log.txt"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "train.py",
                "test",
                "--config",
                "conf/digits/ann.yaml",
                "--config",
                str(cfg),
                "--ckpt_path",
                dense_ann_ckpt,
                *tiny_overrides(tmp_path / "run"),
                *DDP,
            ],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while "attack runs, each on the samples" not in log.read_text() and time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(4)
        ranks = _children(proc.pid)
        assert ranks and proc.poll() is None, "the evaluation ended before the signal: make it longer"
        os.kill(ranks[0], signal.SIGTERM)
        t0 = time.time()
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode != 0 and time.time() - t0 < 60, text[-3000:]
    assert "[AttackEvaluation] interrupted after" in text, text[-3000:]
    for bad in ("Storage size calculation overflowed", "Connection closed by peer", "Connection reset"):
        assert bad not in text, text[-3000:]
    res = json.loads(Path(ckpt(tmp_path / "run", "attacks.json")).read_text())
    assert res["interrupted"].startswith("interrupted") and len(res["eps"]) < 4
    per_sample = json.loads(Path(ckpt(tmp_path / "run", "per_sample.json")).read_text())["samples"]
    assert len(per_sample) == 120 and all(set(s["broken_by"]) == set(res["eps"]) for s in per_sample)


# every random attack of the tier (PGD's random start, APGD-CE with restarts, APGD-T, SA-PGD through ASSG and HART,
# Square, check rounds with new seeds) on an odd-sized subset
RANDOM_EVAL = """
trainer:
  callbacks:
    - class_path: callbacks.AttackEvaluation
      init_args:
        epsilons: [0.1, 0.2]
        num_samples: 31
        batch_size: {batch}
        adaptive: {{top_k: 2, steps: 5, ce_restarts: 2, max_targets: 2, other_targets: 1, square_queries: 40,
                    check_rounds: 2, snn_steps: 8, snn_restarts: 2}}
        audit: false
"""


def _records(root: Path) -> list[dict]:
    return json.loads(Path(ckpt(root, "per_sample.json")).read_text())["samples"]


@pytest.mark.e2e
def test_per_sample_records_are_the_same_on_1_and_2_processes_2_nodes_and_any_batch_size(dense_ann_ckpt, tmp_path):
    """Every random start derives from (the attack run, the sample's index): the adaptive tier's per-sample records
    are identical whatever the process count, the node count, the batch size or the subset's size."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    fit = [*SNN, "--model.init_args.ann_checkpoint", dense_ann_ckpt]
    run_cli("train.py", "fit", *fit, *tiny_overrides(tmp_path / "fit", batches=4), "--trainer.accelerator", "cpu")
    model = ckpt(tmp_path / "fit")
    configs = {}
    for batch in (8, 13):
        configs[batch] = tmp_path / f"eval{batch}.yaml"
        configs[batch].write_text(RANDOM_EVAL.format(batch=batch))
    test = ["train.py", "test", *SNN, "--ckpt_path", model]
    run_cli(*test, "--config", str(configs[8]), *tiny_overrides(tmp_path / "one"), "--trainer.accelerator", "cpu")
    run_cli(*test, "--config", str(configs[13]), *tiny_overrides(tmp_path / "b13"), "--trainer.accelerator", "cpu")
    run_cli(*test, "--config", str(configs[8]), *tiny_overrides(tmp_path / "two"), *DDP)
    # two nodes of one process each, launched by torchrun on localhost (gloo)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                "29533",
                *test,
                "--config",
                str(configs[8]),
                *tiny_overrides(tmp_path / "nodes"),
                "--trainer.accelerator",
                "cpu",
                "--trainer.devices",
                "1",
                "--trainer.num_nodes",
                "2",
                "--trainer.strategy",
                "ddp",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    logs = [p.communicate(timeout=600)[0] for p in nodes]
    assert all(p.returncode == 0 for p in nodes), logs[0][-3000:] + logs[1][-3000:]
    one = _records(tmp_path / "one")
    assert len(one) == 31 and any(r["broken_by"]["0.1"] not in (None, "clean") for r in one)
    assert any(str(r["broken_by"]["0.2"]).startswith(("adaptive", "square", "check")) for r in one)  # the tier ran
    for other in ("two", "nodes", "b13"):
        assert _records(tmp_path / other) == one, other
    # the cards: written once under DDP, every rank's examples gathered, the same examples on any process count
    from srsnn.export.card import Card
    from srsnn.robustness.results import Examples

    cards = {k: sorted((tmp_path / k).rglob("card.json")) for k in ("one", "two", "nodes", "b13")}
    assert all(len(v) == 1 for v in cards.values()), cards
    base = Card.read(str(cards["one"][0]))
    ex = Examples.read(str(cards["one"][0].parent / base.examples["file"]))
    assert len(ex["index"]) == base.examples["count"] > 0
    for other in ("two", "nodes", "b13"):
        card = Card.read(str(cards[other][0]))
        assert (card.samples, card.eps, card.data, card.model) == (base.samples, base.eps, base.data, base.model)
        theirs = Examples.read(str(cards[other][0].parent / card.examples["file"]))
        assert torch.equal(theirs["index"], ex["index"]) and torch.equal(theirs["x"], ex["x"]), other
    from srsnn_cli import report

    assert report.main(["verify", str(cards["two"][0])]) == 0
