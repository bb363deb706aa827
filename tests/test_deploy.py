"""NIR export round trip and the compact export of SNNs."""
import pytest
import torch
from torch import nn

from nets.architectures import PreActResNet, SmallCNN
from nets.compact import export_compact, load_compact
from nets.conversion import convert
from nets.errors import UserError
from nets.masks import ensure_masks, prunable_layers
from nets.nir_export import NIRRunner, export_nir, to_nir
from callbacks.pruning import prune_by_magnitude

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


@pytest.mark.parametrize("make", [lambda: SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3]),
                                  lambda: PreActResNet(blocks=1, base_width=4, input_size=8, in_channels=1)])
def test_nir_round_trip_same_predictions_and_spikes(make, tmp_path):
    snn = _sparse_snn(make(), (1, 8, 8))
    path = tmp_path / "m.nir"
    export_nir(snn, str(path), (1, 8, 8))
    runner = NIRRunner(str(path), num_steps=8)
    x = torch.rand(64, 1, 8, 8)
    neurons = [m for m in snn.modules() if m.__class__.__name__ == "IFNeuron"]
    for n in neurons:
        n.record = True
    with torch.no_grad():
        a, b = snn(x), runner(x)
    spikes = sum(float(n.last_spikes.sum()) for n in neurons)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.98
    assert torch.allclose(a, b, atol=1e-3)
    assert abs(sum(runner.spike_counts.values()) - spikes) <= 0.01 * spikes
    graph = nir.read(str(path))
    convs = [v for v in graph.nodes.values() if isinstance(v, nir.Conv2d) and v.weight.shape[-1] == 3]
    assert any((v.weight == 0).mean() > 0.5 for v in convs)  # pruned entries travel as zeros


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
    spec = {"kind": "snn", "net": {"class_path": "nets.architectures.SmallCNN",
                                   "init_args": {"input_size": 8, "width": 4, "mean": [0.2], "std": [0.3]}},
            "snn": {"num_steps": 8, "encoding": "direct", "neuron": {"reset": "zero", "surrogate": "triangular",
                                                                      "min_threshold": 0.03, "bn": "keep"}}}
    export_compact(snn, str(tmp_path / "s.safetensors"), spec)
    back = load_compact(str(tmp_path / "s.safetensors"))
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(snn(x), back(x))
