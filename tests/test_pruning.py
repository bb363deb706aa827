import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from callbacks.pruning import HarpPruning, HydraPruning, MagnitudePruning, prune_by_magnitude
from helpers import ckpt, run_main, tiny_overrides
from srsnn.ann.architectures import VGG, SmallCNN
from srsnn.errors import UserError
from srsnn.export.compact import decode_gaps, encode_gaps, export_compact, load_compact
from srsnn.pruning.masks import ensure_masks, get_weight_mask, mask_of, prunable_layers, sparsity_report


def _scored(net, sparsity, cb):
    ensure_masks(net)
    for _, m in prunable_layers(net):
        get_weight_mask(m).add_scores(
            m.parametrizations.weight.original, 1 - sparsity, learn_rate=cb.learn_rate, rate_min=cb.rate_min
        )


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_hydra_topk_gives_exact_per_layer_sparsity(sparsity):
    net = SmallCNN(input_size=8)
    cb = HydraPruning(sparsity)
    _scored(net, sparsity, cb)
    net(torch.rand(2, 1, 8, 8)).sum().backward()  # straight-through gradient reaches the scores
    assert all(get_weight_mask(m).scores.grad is not None for _, m in prunable_layers(net))
    cb.fix_masks(net)
    for name, m in prunable_layers(net):
        n = m.weight.numel()
        assert int(mask_of(m).sum()) == max(1, round((1 - sparsity) * n)), name


@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_harp_global_sparsity_within_half_a_percent_and_non_uniform(sparsity):
    net = SmallCNN(input_size=8, width=16)
    cb = HarpPruning(sparsity)
    _scored(net, sparsity, cb)
    with torch.no_grad():  # pretend training moved the learned ratios apart
        for i, (_, m) in enumerate(prunable_layers(net)):
            get_weight_mask(m).rate_logit.add_(0.8 * (i - 1.5))
    cb.fix_masks(net)
    report = sparsity_report(net)
    assert abs(report["global"] - sparsity) <= 0.005
    layer = [v for k, v in report.items() if k != "global"]
    assert max(layer) - min(layer) > (1 - sparsity) / 2  # a non-uniform allocation
    from srsnn.pruning.masks import strip_scores

    strip_scores(net)  # what conversion and export do: the projected masks must survive
    assert sparsity_report(net) == report


def test_harp_hinge_penalty_grows_per_epoch_and_only_above_the_budget():
    net = SmallCNN(input_size=8)
    cb = HarpPruning(0.9, gamma=1.0)
    _scored(net, 0.5, cb)  # start far above the 10 % budget
    p0, p4 = cb.penalty(net, 0), cb.penalty(net, 4)
    assert float(p4.detach()) == pytest.approx(5 * float(p0.detach())) and float(p0.detach()) > 0  # (epoch + 1) gamma
    p0.backward()
    assert all(get_weight_mask(m).rate_logit.grad > 0 for _, m in prunable_layers(net))  # descend => keep less
    below = SmallCNN(input_size=8)
    _scored(below, 0.95, HarpPruning(0.9))  # keeping 5 % < 10 %: the hinge is flat
    assert float(HarpPruning(0.9).penalty(below, 3).detach()) == 0.0


def test_harp_rate_gets_the_sum_of_the_mask_gradient_and_keeps_a_per_layer_minimum():
    net = SmallCNN(input_size=8, width=16)
    cb = HarpPruning(0.9, alpha=0.1)
    _scored(net, 0.9, cb)
    wm = get_weight_mask(prunable_layers(net)[0][1])
    assert float(wm.keep_ratio()) == pytest.approx(0.1, rel=1e-3) and float(wm.rate_min) == pytest.approx(0.01)
    m = wm.score_mask()
    g = torch.randn_like(m)
    (m * g).sum().backward()
    dr = float(wm.rate_logit.grad) / float(torch.sigmoid(wm.rate_logit) * (1 - torch.sigmoid(wm.rate_logit)) * 0.99)
    assert dr == pytest.approx(float(g.sum()), rel=1e-4)
    with torch.no_grad():  # one layer driven towards keeping nothing
        wm.rate_logit.fill_(-30.0)
    cb.fix_masks(net)
    first = prunable_layers(net)[0][1]
    assert float(mask_of(first).mean()) >= 0.01 - 1 / first.weight.numel()


def test_magnitude_cubic_schedule_and_global_scope():
    cb = MagnitudePruning(0.9, start_epoch=0, end_epoch=4, frequency=1)
    targets = [cb.target(e) for e in range(6)]
    assert targets[0] == 0 and targets[4] == pytest.approx(0.9) and targets[5] is None
    assert all(a < b for a, b in zip(targets[:4], targets[1:5]))
    net = SmallCNN(input_size=8)
    ensure_masks(net)
    prune_by_magnitude(net, 0.9, "global")
    assert sparsity_report(net)["global"] == pytest.approx(0.9, abs=1e-3)


def test_bad_sparsity_is_refused_by_the_parser_and_unprunable_network_is_a_clear_error():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(HydraPruning, "prune")
    assert parser.parse_args(["--prune.sparsity", "0.9"]).prune.sparsity == 0.9
    for bad in ("-0.1", "1.0", "1.5"):
        with pytest.raises(Exception, match="FractionBelowOne"):
            parser.parse_args(["--prune.sparsity", bad])
    with pytest.raises(UserError, match="no prunable"):
        sparsity_report(nn.Sequential(nn.ReLU()))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3000), density=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_gap_encoding_round_trip(n, density, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g) < density).float() * torch.randn(n, generator=g)
    v, gaps = encode_gaps(x)
    assert gaps.dtype == torch.uint8
    assert torch.equal(decode_gaps(v, gaps, n), x)


def test_compact_export_round_trip_and_size_at_99_percent(tmp_path):
    net = VGG("vgg11", num_classes=10, in_channels=3, input_size=32, width=0.5)
    net.eval()
    ensure_masks(net)
    prune_by_magnitude(net, 0.99)
    spec = {
        "kind": "ann",
        "net": {
            "class_path": "srsnn.ann.architectures.VGG",
            "init_args": {"variant": "vgg11", "input_size": 32, "width": 0.5},
        },
    }
    r = export_compact(net, str(tmp_path / "m.safetensors"), spec)
    assert r["dense_fp32_bytes"] / r["compact_bytes"] >= 50, r
    back = load_compact(str(tmp_path / "m.safetensors"))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), back(x))


@pytest.mark.slow
def test_pruning_callbacks_through_the_cli(dense_ann_ckpt, tmp_path, recwarn):
    for method in ("magnitude", "hydra", "harp", "channels"):
        root = tmp_path / method
        extra = ["--trainer.max_epochs", "2"] + (
            ["--trainer.callbacks.init_args.score_epochs", "1"] if method in ("hydra", "harp") else []
        )
        out = run_main(
            "fit",
            "--config",
            f"conf/digits/prune_{method}.yaml",  # in-process: no interpreter start
            "--model.init_args.init_from",
            dense_ann_ckpt,
            *tiny_overrides(root),
            *extra,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Pruning]" in out.stderr + out.stdout
        # the pruned checkpoint restores into a fresh model for testing (masks / shrunk channels included)
        out = run_main(
            "test",
            "--config",
            f"conf/digits/prune_{method}.yaml",
            "--ckpt_path",
            ckpt(root),
            *tiny_overrides(tmp_path / f"{method}_test"),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert "test/acc" in out.stdout
    for method in ("hydra", "harp"):
        state = torch.load(ckpt(tmp_path / method), weights_only=True)["state_dict"]
        masks = [v for k, v in state.items() if k.endswith("weight.0.mask")]
        assert masks and abs(1 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks) - 0.9) < 0.01
    # HARP's rate penalty is a term of the training loss, logged with it
    assert "train/harp_rate_penalty" in sorted((tmp_path / "harp").rglob("metrics.csv"))[0].read_text()
    # torch-pruning's counting leaves modules in eval mode; ChannelPruning restores them (no Lightning warning)
    assert not [w for w in recwarn if "in eval mode at the start of training" in str(w.message)]


@settings(max_examples=6, deadline=None)
@given(
    width=st.integers(1, 6), size=st.sampled_from([4, 8, 12]), sparsity=st.floats(0.0, 0.999), seed=st.integers(0, 99)
)
def test_compact_export_round_trip_random_shapes_and_sparsities(width, size, sparsity, seed, tmp_path_factory):
    torch.manual_seed(seed)
    net = SmallCNN(input_size=size, width=width).eval()
    ensure_masks(net)
    prune_by_magnitude(net, sparsity)
    path = str(tmp_path_factory.mktemp("c") / "m.safetensors")
    export_compact(
        net,
        path,
        {
            "kind": "ann",
            "net": {
                "class_path": "srsnn.ann.architectures.SmallCNN",
                "init_args": {"input_size": size, "width": width},
            },
        },
    )
    back = load_compact(path)
    x = torch.rand(3, 1, size, size)
    with torch.no_grad():
        assert torch.equal(net(x), back(x))


TOY_METHOD = '''"""A toy method: every other weight of each layer pruned, once, at the start of fit."""

import torch

from srsnn.pruning.masks import add_mask, ensure_masks, prunable_layers

from . import PruningSchedule, _net


class EveryOtherPruning(PruningSchedule):
    method, label, color = "toy", "Toy", "tab:olive"

    def __init__(self, sparsity: float = 0.5):
        super().__init__(sparsity)

    def on_train_epoch_start(self, trainer, pl_module):
        net = _net(pl_module)
        ensure_masks(net)
        for _, m in prunable_layers(net):
            add_mask(m, (torch.arange(m.weight.numel(), device=m.weight.device) % 2 == 0).view_as(m.weight).float())
        self.log_sparsity(trainer, pl_module)
'''


@pytest.mark.slow
def test_a_pruning_method_is_one_module(dense_ann_ckpt, tmp_path):
    """A method dropped into callbacks/pruning/ (here a copy of the package, first on the path) is a callback the
    config names, runs in fit, and the registry gives the report its label and color; nothing else is edited."""
    import os
    import shutil
    import subprocess
    import sys

    from helpers import ROOT

    # the copy and a copy of train.py in one folder: a script's own folder comes first on the path
    shutil.copytree(ROOT / "callbacks", tmp_path / "callbacks", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "callbacks" / "pruning" / "toy.py").write_text(TOY_METHOD)
    shutil.copy(ROOT / "train.py", tmp_path / "train.py")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    probe = (
        "import callbacks, srsnn.report.figures as f, srsnn.report.tables as t\n"
        "from srsnn.pruning.registry import method\n"
        "print(callbacks.__file__, callbacks.EveryOtherPruning.__name__, method('toy').label, f._color('Toy'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(tmp_path) in out.stdout and out.stdout.split()[1:] == ["EveryOtherPruning", "Toy", "tab:olive"]
    fit = [sys.executable, str(tmp_path / "train.py"), "fit", "--config", str(ROOT / "conf/digits/ann.yaml")]
    fit += ["--model.init_args.init_from"]
    fit += [dense_ann_ckpt, "--trainer.callbacks", "callbacks.EveryOtherPruning", *tiny_overrides(tmp_path / "run")]
    out = subprocess.run(fit, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[EveryOtherPruning] epoch 0: global sparsity 0.5" in out.stderr + out.stdout
