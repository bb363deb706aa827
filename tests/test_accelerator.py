"""Every stage on an accelerator: the simulated one here (``sim_device.py``: computes on the CPU, raises where CUDA
raises), a real GPU under ``SRSNN_TEST_DEVICE=cuda`` (``make gpu-check``).

First the simulator's rules, each proved against what CUDA does; then the stages: conversion with calibration,
both schedules forward and backward, the fine-tuning step, the evaluation (paper protocol, adaptive tier, Square,
check rounds) on an SNN and an ANN, synops, pruning, compact and NIR export, 2-rank counting with NCCL's device
rule, mixed precision, and train.py's fit / test with a strategy whose root device is the accelerator.
"""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
from sim_device import SIM, SimTensor, simulated_accelerator
from torch import nn

from callbacks.pruning import HarpPruning, prune_by_magnitude
from callbacks.shards import sum_over_ranks
from helpers import ckpt, run_main, tiny_eval, tiny_overrides
from lightning_modules import ConvertedSNN
from srsnn.ann.architectures import ResNet20, SmallCNN
from srsnn.export.compact import export_compact
from srsnn.export.nir import to_nir
from srsnn.pruning.masks import add_mask, mask_of, prunable_layers, raw_weight
from srsnn.robustness.budget import AdaptiveBudget
from srsnn.robustness.paths import paper_ensemble
from srsnn.robustness.runner import Evaluator
from srsnn.snn.conversion import convert
from srsnn.snn.network import gradient_path, neurons_of
from srsnn.snn.neurons import IFNeuron
from srsnn.snn.synops import SynopCounter

REAL = os.environ.get("SRSNN_TEST_DEVICE")  # "cuda": the same cases on a real accelerator
sim_only = pytest.mark.skipif(bool(REAL), reason="a rule of the simulated accelerator")
BUDGET = AdaptiveBudget(top_k=2, steps=3, max_targets=2, other_targets=1, square_queries=10, check_rounds=2)


@pytest.fixture
def dev():
    if REAL:
        yield torch.device(REAL)
    else:
        with simulated_accelerator() as d:
            yield d


def on(t: torch.Tensor, d: torch.device) -> bool:
    return isinstance(t, SimTensor) if d == SIM else t.device.type == d.type


def all_on(module: nn.Module, d: torch.device) -> None:
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if not on(t, d)]
    assert not left, f"not on {d}: {left[:5]}"


def small_ann(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3])


# ---- the simulator's rules (CUDA's, not stricter) --------------------------------------------------------
@sim_only
def test_rule_mixing_devices_raises_except_0dim_cpu_tensors(dev):
    x = torch.rand(4, 3).to(dev)
    with pytest.raises(RuntimeError, match="same device"):
        x + torch.ones(4, 3)  # CUDA: "Expected all tensors to be on the same device"
    with pytest.raises(RuntimeError, match="same device"):
        torch.ones(4, 3).add_(x)
    assert on(x * torch.tensor(2.0), dev)  # a 0-dim CPU tensor is a scalar to CUDA kernels
    assert (x * 2).sum().item() == pytest.approx(2 * float(x.sum()))  # .item() / float() read the values


@sim_only
def test_rule_cpu_indices_may_index_the_device_but_written_values_must_match(dev):
    x = torch.rand(5).to(dev)
    idx = torch.tensor([0, 3])
    assert on(x[idx], dev)  # CUDA accepts CPU index tensors
    cpu = torch.zeros(5, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="indices should be either on cpu"):
        cpu[idx.to(dev)]
    with pytest.raises(RuntimeError, match="same device"):
        cpu[idx] = x[idx] > 0.5  # the CPU-mask bug class: values from the device into a CPU tensor
    with pytest.raises(RuntimeError, match="same device"):
        x[idx] = torch.ones(2)
    x[idx] = torch.tensor(1.0)  # a 0-dim value is a scalar
    cpu.copy_(x > 0.5)  # copy_ and .to() cross devices: what they are for
    assert cpu.tolist() == (x > 0.5).tolist() and x.cpu().device.type == "cpu"


@sim_only
def test_rule_collectives_take_device_tensors_only(dev, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="NCCL accepts accelerator tensors only"):
            sum_over_ranks(torch.ones(3))
        assert sum_over_ranks(torch.ones(3, device=dev)).tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


# ---- the stages -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["plain", "residual"])
def test_conversion_calibrates_on_the_device_and_both_schedules_run_forward_and_backward(dev, arch):
    ann = small_ann() if arch == "plain" else ResNet20(num_classes=10, in_channels=1, input_size=8)
    calib = [torch.rand(8, 1, 8, 8)]
    snn = convert(ann.to(dev), [b.to(dev) for b in calib], num_steps=2, calib_steps=3).eval()
    all_on(snn, dev)
    x = torch.rand(6, 1, 8, 8).to(dev)
    with torch.no_grad():
        ref = snn(x)
    for schedule in ("layer", "time"):
        snn.schedule = schedule
        xi = x.clone().requires_grad_(True)
        out = snn(xi)
        assert on(out, dev) and torch.allclose(out, ref, atol=1e-5)
        out.sum().backward()
        assert on(xi.grad, dev) and all(on(p.grad, dev) for p in snn.parameters() if p.grad is not None)
    for mode in ("bptr", "relu"):
        with gradient_path(snn, mode):
            xi = x.clone().requires_grad_(True)
            snn(xi).sum().backward()
            assert on(xi.grad, dev)


def test_fine_tuning_step_on_the_device_keeps_pruned_weights_at_zero(dev):
    ann = small_ann()
    for _, m in prunable_layers(ann):
        add_mask(m)
    prune_by_magnitude(ann, 0.5)
    module = ConvertedSNN(net=small_ann(), num_steps=2, calib_steps=3, calib_batches=1)
    module.snn.load_state_dict(convert(ann, [torch.rand(8, 1, 8, 8)], num_steps=2, calib_steps=3).state_dict())
    module.to(dev)
    all_on(module, dev)
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.rand(8, 1, 8, 8).to(dev), torch.randint(0, 10, (8,)).to(dev)
    loss, logits = module.training_loss(x, y)  # TRADES with the R+FGSM inner attack on the KL term (paper)
    loss.backward()
    opt.step()
    assert on(loss, dev) and on(logits, dev)
    for _, m in prunable_layers(module.snn):
        assert float((raw_weight(m) * (mask_of(m) == 0)).abs().sum()) == 0.0


@pytest.mark.parametrize("kind", ["snn", "ann"])
def test_evaluation_runs_on_the_device_and_counts_as_on_the_cpu(dev, kind):
    ann = small_ann().eval()
    model = convert(ann, [torch.rand(16, 1, 8, 8)], num_steps=2, calib_steps=3).eval() if kind == "snn" else ann
    members = paper_ensemble()[::3] if kind == "snn" else None  # every kind of path, the ReLU one included
    x = torch.rand(10, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)

    def run(m, xs, ys):
        torch.manual_seed(1)
        ev = Evaluator(
            m, members, [0.05, 0.2], [{"name": "fgsm"}, {"name": "pgd", "steps": 2}], 10, BUDGET, batch_size=5
        )
        return ev.run(xs, ys)

    import copy

    cpu = run(copy.deepcopy(model), x, y)
    out = run(model.to(dev), x.to(dev), y.to(dev))  # the paper protocol, ranking, adaptive tier, Square, checks
    assert out["interrupted"] is None and out["clean"] == cpu["clean"]
    if not REAL:  # the same arithmetic on the same payloads: the same verdict per sample
        assert {e: r["per_sample"] for e, r in out["eps"].items()} == {
            e: r["per_sample"] for e, r in cpu["eps"].items()
        }
    stages = {k for r in out["eps"].values() for k in r["broken_by_phase"]}
    assert {"adaptive", "square"} <= stages


def test_synops_pruning_and_export_run_on_the_device(dev):
    ann = small_ann()
    for _, m in prunable_layers(ann):
        wm = add_mask(m)
        wm.add_scores(raw_weight(m), keep=0.5, learn_rate=True, rate_min=0.05)  # HARP's scores and rates
    ann.to(dev)
    all_on(ann, dev)
    ann(torch.rand(4, 1, 8, 8).to(dev)).sum().backward()
    harp = HarpPruning(0.5)
    assert on(harp.penalty(ann, 0), dev)
    harp.fix_masks(ann)
    prune_by_magnitude(ann, 0.7)
    snn = convert(ann, [torch.rand(8, 1, 8, 8).to(dev)], num_steps=2, calib_steps=3).eval()
    all_on(snn, dev)
    x = torch.rand(6, 1, 8, 8)
    counts = []
    for where in (dev, torch.device("cpu")):
        counter = SynopCounter(snn.to(where))
        with counter, torch.no_grad():
            snn(x.to(where))
        counts.append(counter.summary()["total"])
    snn.to(dev)
    assert counts[0] == pytest.approx(counts[1]) and counts[0]["synops"] > 0
    with tempfile.TemporaryDirectory() as tmp:
        sizes = export_compact(snn, os.path.join(tmp, "m.safetensors"), {"kind": "snn"})
    assert sizes["nonzero_weights"] == sum(int((mask_of(m) != 0).sum()) for _, m in prunable_layers(snn.net))
    graph = to_nir(snn, (1, 8, 8))  # shapes traced where the network lives
    assert sum(type(n).__name__ == "IF" for n in graph.nodes.values()) == len(neurons_of(snn)) == 3
    all_on(snn, dev)  # export moved nothing


def test_if_neuron_integrates_in_float32_under_mixed_precision():
    """Under autocast the convs hand 16-bit pre-activations to the neuron; its membrane and threshold test stay
    float32, so the spikes are exactly those of a float32 neuron fed the same values."""
    torch.manual_seed(0)
    T, B = 8, 64
    x = (torch.randn(T * B, 32) * 0.3 + 0.1).to(torch.bfloat16)
    neuron = IFNeuron(threshold=0.7)
    neuron.num_steps = T
    ref = neuron(x.float())
    out = neuron(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out.float(), ref) and ref.sum() > 0
    snn = convert(small_ann(), [torch.rand(16, 1, 8, 8)], num_steps=4, calib_steps=3).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = snn(torch.rand(4, 1, 8, 8))
    assert torch.isfinite(logits).all()


# ---- two ranks: NCCL's rule on every collective ------------------------------------------------------------
def _rank_counts(rank: int, world: int, path: str, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    with simulated_accelerator() as d:
        snn = convert(small_ann(), [torch.rand(16, 1, 8, 8)], num_steps=2, calib_steps=3).eval()
        torch.manual_seed(2)
        x = torch.rand(10, 1, 8, 8)
        with torch.no_grad():
            y = snn(x).argmax(1)
        snn.to(d)
        shard = list(range(rank, len(y), world))
        ev = Evaluator(
            snn, paper_ensemble()[-3:], [0.1], [{"name": "fgsm"}], 10, None, reduce=sum_over_ranks, batch_size=4
        )
        res = ev.run(x[shard].to(d), y[shard].to(d))["eps"]["0.1"]
        counter = SynopCounter(snn)
        with counter, torch.no_grad():
            snn(x[shard].to(d))
        synops = sum_over_ranks(torch.tensor([counter.summary()["total"]["synops"]], device=d)).item()
    torch.save({"robust": res["robust_worst"], "paper": res["robust_paper"], "synops": synops}, f"{out}.{rank}")
    if world > 1:
        dist.destroy_process_group()


@sim_only
def test_two_ranks_count_with_device_tensors_as_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_counts, args=(2, str(tmp_path / "pg"), str(tmp_path / "two")), nprocs=2)
    _rank_counts(0, 1, "", str(tmp_path / "one"))
    one = torch.load(f"{tmp_path / 'one'}.0")
    two = [torch.load(f"{tmp_path / 'two'}.{r}") for r in range(2)]
    assert two[0] == two[1]
    assert (two[0]["robust"], two[0]["paper"]) == (one["robust"], one["paper"])
    assert two[0]["synops"] == pytest.approx(one["synops"])  # per-rank sums add up to the whole


# ---- train.py's stages with the accelerator as the strategy's root device ---------------------------------
def _device_args() -> list[str]:
    if REAL:
        return ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    return ["--trainer.strategy", '{"class_path": "sim_lightning.SimStrategy"}']


def test_train_py_fits_converts_and_evaluates_on_the_device(dev, tmp_path, monkeypatch):
    import srsnn.snn.conversion
    from srsnn.devices import device_of

    calibrated_on = []
    real = srsnn.snn.conversion.calibrate_thresholds

    def spy(snn, batches, *args, **kwargs):
        batches = list(batches)
        calibrated_on.append((device_of(snn), [b.device for b in batches]))
        return real(snn, batches, *args, **kwargs)

    monkeypatch.setattr(srsnn.snn.conversion, "calibrate_thresholds", spy)
    if not REAL:
        from sim_lightning import SimStrategy

        monkeypatch.setattr(SimStrategy, "batches", 0)
    small = [*tiny_overrides(tmp_path / "x", batches=2), "--trainer.limit_val_batches", "1", *_device_args()]
    root = lambda stage: ["--trainer.default_root_dir", str(tmp_path / stage)]
    snn = [
        "--model.init_args.num_steps",
        "2",
        "--model.init_args.calib_steps",
        "3",
        "--model.init_args.calib_batches",
        "2",
        "--model.init_args.eval_steps",
        "2",
    ]

    def ok(*args):
        out = run_main(*args)
        assert out.returncode == 0, out.stderr[-4000:]
        return out

    ok("fit", "--config", "conf/digits/ann.yaml", "--model.init_args.attack_steps", "2", *small, *root("ann"))
    ok(
        "fit",
        "--config",
        "conf/digits/snn.yaml",
        "--model.init_args.ann_checkpoint",
        ckpt(tmp_path / "ann"),
        *snn,
        *small,
        *root("snn"),
    )
    # conversion ran where the model runs (Lightning calls setup before it moves the module there)
    assert calibrated_on and all(d.type == dev.type and {b.type for b in bs} == {dev.type} for d, bs in calibrated_on)
    ok(
        "test",
        "--config",
        "conf/digits/snn.yaml",
        "--config",
        tiny_eval(tmp_path),
        "--ckpt_path",
        ckpt(tmp_path / "snn"),
        *snn,
        *small,
        *root("test"),
    )
    assert os.path.isfile(ckpt(tmp_path / "test", "attacks.json")) and os.path.isfile(
        ckpt(tmp_path / "test", "energy.json")
    )
    if not REAL:
        from sim_lightning import SimStrategy

        assert SimStrategy.batches >= 6  # train, validation and test batches all went to the device
