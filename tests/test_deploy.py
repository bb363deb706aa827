"""NIR export round trip and the compact export of SNNs."""

import pytest
import torch
from torch import nn

from callbacks.pruning import prune_by_magnitude
from srsnn.ann.architectures import PreActResNet, SmallCNN
from srsnn.errors import UserError
from srsnn.export.compact import export_compact, load_compact
from srsnn.export.nir import NIRRunner, export_nir, to_nir
from srsnn.pruning.masks import ensure_masks
from srsnn.snn.conversion import convert

nir = pytest.importorskip("nir")


def _sparse_snn(ann, shape, reset="zero"):
    torch.manual_seed(0)
    ann.train()
    with torch.no_grad():
        for _ in range(3):
            ann(torch.rand(32, *shape))
    ensure_masks(ann)
    prune_by_magnitude(ann, 0.7)
    return convert(ann, [torch.rand(32, *shape)], num_steps=8, calib_steps=16, reset=reset).eval()


@pytest.mark.parametrize(
    "make",
    [
        lambda: SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3]),
        lambda: PreActResNet(blocks=1, base_width=4, input_size=8, in_channels=1),
    ],
)
def test_nir_round_trip_same_predictions_and_spikes(make, tmp_path):
    snn = _sparse_snn(make(), (1, 8, 8))
    path = tmp_path / "m.nir"
    export_nir(snn, str(path), (1, 8, 8))
    runner = NIRRunner(str(path), num_steps=8)
    x = torch.rand(64, 1, 8, 8)
    from srsnn.snn.network import record_spikes

    counted = []
    with torch.no_grad(), record_spikes(snn, lambda _n, s: counted.append(float(s.sum()))):
        a = snn(x)
    with torch.no_grad():
        b = runner(x)
    spikes = sum(counted)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.98
    assert torch.allclose(a, b, atol=1e-3)
    assert abs(sum(runner.spike_counts.values()) - spikes) <= 0.01 * spikes
    graph = nir.read(str(path))
    convs = [v for v in graph.nodes.values() if isinstance(v, nir.Conv2d) and v.weight.shape[-1] == 3]
    assert any((v.weight == 0).mean() > 0.5 for v in convs)  # pruned entries travel as zeros


class _SpecIF(nn.Module):
    """NIR's IF, from the spec: v <- v + r * I; where v > v_threshold: spike and v <- v_reset."""

    def __init__(self, node):
        super().__init__()
        self.r, self.th, self.vr = (
            torch.as_tensor(a, dtype=torch.float32) for a in (node.r, node.v_threshold, node.v_reset)
        )

    def forward(self, x, state=None):
        v = (torch.zeros_like(x) if state is None else state) + self.r * x
        s = (v > self.th).to(x.dtype)
        return s, torch.where(s.bool(), self.vr.expand_as(v), v)


class _SpecScale(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.scale = torch.as_tensor(node.scale)

    def forward(self, x):
        return x * self.scale


class _SpecFlatten(nn.Module):  # NIR's dims exclude the batch (nirtorch 2.6's default reads them as torch dims)
    def __init__(self, node):
        super().__init__()
        self.start, self.end = int(node.start_dim), int(node.end_dim)

    def forward(self, x):
        return x.flatten(self.start + 1, self.end if self.end < 0 else self.end + 1)


def _spec_affine(node):  # nirtorch 2.6's default Affine mapping drops the bias
    m = nn.Linear(node.weight.shape[1], node.weight.shape[0])
    m.weight.data, m.bias.data = torch.from_numpy(node.weight), torch.from_numpy(node.bias)
    return m


@pytest.mark.parametrize(
    "make",
    [
        lambda: SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3]),
        lambda: PreActResNet(blocks=1, base_width=4, input_size=8, in_channels=1),
    ],
)
def test_nirtorch_runs_the_exported_file_with_the_same_predictions(make, tmp_path):
    """An independent consumer: nirtorch builds and steps the graph (edges, sums into a node, state through
    time); only the node kinds it has no (or a wrong) default for are written here, from the NIR spec."""
    nirtorch = pytest.importorskip("nirtorch")
    snn = _sparse_snn(make(), (1, 8, 8))
    path = tmp_path / "m.nir"
    export_nir(snn, str(path), (1, 8, 8))
    graph = nirtorch.nir_to_torch(
        str(path), {nir.IF: _SpecIF, nir.Scale: _SpecScale, nir.Flatten: _SpecFlatten, nir.Affine: _spec_affine}
    )
    x = torch.rand(256, 1, 8, 8)
    with torch.no_grad():
        out, state = graph(x)
        for _ in range(snn.num_steps - 1):
            y, state = graph(x, state)
            out = out + y
        ours = snn(x)
    assert (ours.argmax(1) == (out / snn.num_steps).argmax(1)).float().mean() >= 0.99


def test_nir_threshold_is_shifted_to_nir_s_strict_inequality(tmp_path):
    """This repo fires at v >= theta, NIR at v > theta': an input exactly at theta must spike in both."""
    import numpy as np

    from srsnn.snn.neurons import IFNeuron

    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 1, bias=False), IFNeuron(threshold=0.5), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[1].weight.fill_(1.0)
        net[3].weight.fill_(1.0)
    node = next(v for v in to_nir(net, (1,)).nodes.values() if isinstance(v, nir.IF))
    theta = float(np.asarray(node.v_threshold).flat[0])
    assert theta < 0.5 and np.float32(0.5) > np.float32(theta) and np.nextafter(np.float32(theta), np.float32(1)) == 0.5
    runner = NIRRunner(to_nir(net, (1,)), num_steps=1)
    assert float(runner(torch.full((1, 1), 0.5))) == 1.0 and float(net(torch.full((1, 1), 0.5))) == 1.0


def test_nir_refuses_what_it_cannot_express(tmp_path):
    snn = _sparse_snn(SmallCNN(input_size=8, width=4), (1, 8, 8), reset="subtract")
    with pytest.raises(UserError, match="reset by subtraction"):
        to_nir(snn, (1, 8, 8))
    odd = _sparse_snn(SmallCNN(input_size=8, width=4), (1, 8, 8))
    odd.net.insert(3, nn.MaxPool2d(1))
    with pytest.raises(UserError, match="NIR cannot express layer 3 \\(MaxPool2d\\)"):
        to_nir(odd, (1, 8, 8))


def test_compact_export_of_an_snn_keeps_thresholds_and_outputs(tmp_path):
    snn = _sparse_snn(SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3]), (1, 8, 8))
    spec = {
        "kind": "snn",
        "net": {
            "class_path": "srsnn.ann.architectures.SmallCNN",
            "init_args": {"input_size": 8, "width": 4, "mean": [0.2], "std": [0.3]},
        },
        "snn": {
            "num_steps": 8,
            "encoding": "direct",
            "neuron": {"reset": "zero", "surrogate": "triangular", "min_threshold": 0.03, "bn": "keep"},
        },
    }
    export_compact(snn, str(tmp_path / "s.safetensors"), spec)
    back = load_compact(str(tmp_path / "s.safetensors"))
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(snn(x), back(x))


def test_infer_names_a_network_module_it_cannot_import(tmp_path, capsys):
    from srsnn_cli import infer

    ann = SmallCNN(input_size=8, width=4)
    ensure_masks(ann)
    spec = {"kind": "ann", "net": {"class_path": "my_nets.MyCNN", "init_args": {}}}  # the user's own module
    export_compact(ann, str(tmp_path / "m.safetensors"), spec)
    assert infer.main([str(tmp_path / "m.safetensors"), "--digits", "2"]) == 2
    err = capsys.readouterr().err
    assert "my_nets.MyCNN, which cannot be imported here" in err and "PYTHONPATH" in err and "Traceback" not in err


def test_the_second_opinion_example_attacks_an_exported_model_in_the_compare_format(tmp_path, capsys):
    import subprocess
    import sys

    from helpers import ROOT
    from srsnn_cli import report

    ann = SmallCNN(input_size=8, width=4)
    ensure_masks(ann)
    spec = {
        "kind": "ann",
        "net": {"class_path": "srsnn.ann.architectures.SmallCNN", "init_args": {"input_size": 8, "width": 4}},
    }
    export_compact(ann, str(tmp_path / "m.safetensors"), spec)
    out = subprocess.run(
        [
            sys.executable,
            "bench/second_opinion.py",
            str(tmp_path / "m.safetensors"),
            "--samples",
            "12",
            "--steps",
            "2",
            "--eps",
            "0.1",
            "--out",
            str(tmp_path / "theirs.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = str(tmp_path / "theirs.json")
    assert report.main(["compare", theirs, theirs]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| 0.1"))
    assert row.endswith("| 0 | 0 |")  # an evaluation finds nothing the same evaluation missed


@pytest.mark.parametrize("classes, code, says", [(3, 0, "testing on the digits 0..2"), (12, 2, "has 12 classes")])
def test_infer_digits_follows_the_models_class_count_or_says_why_not(tmp_path, capsys, classes, code, says):
    from srsnn_cli import infer

    ann = SmallCNN(input_size=8, width=4, num_classes=classes)
    ensure_masks(ann)
    spec = {
        "kind": "ann",
        "net": {
            "class_path": "srsnn.ann.architectures.SmallCNN",
            "init_args": {"input_size": 8, "width": 4, "num_classes": classes},
        },
    }
    export_compact(ann, str(tmp_path / "m.safetensors"), spec)
    assert infer.main([str(tmp_path / "m.safetensors"), "--digits", "5"]) == code
    out = capsys.readouterr()
    assert says in out.out + out.err and "Traceback" not in out.err
