"""Synop counts on hand-computed cases and against a brute-force Jacobian count."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from srsnn.ann.architectures import PreActResNet, SmallCNN
from srsnn.pruning.masks import add_mask, ensure_masks, prunable_layers
from srsnn.snn.conversion import spiking_structure
from srsnn.snn.network import SpikingNetwork, record_spikes
from srsnn.snn.neurons import IFNeuron
from srsnn.snn.spike_readers import spike_readers
from srsnn.snn.synops import SynopCounter, ann_macs, fanout, layer_labels


def test_conv_stride_two_with_padding_hand_count():
    # 1 channel, 4x4 input, 3x3 kernel, stride 2, padding 1 -> 2x2 output at centres (0,0),(0,2),(2,0),(2,2)
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    ensure_masks(nn.Sequential(conv))
    fo = fanout([[conv]], (1, 4, 4))
    # input pixel (r, c) feeds output (i, j) iff |r - 2i| <= 1 and |c - 2j| <= 1
    expected = torch.zeros(4, 4)
    for r in range(4):
        for c in range(4):
            expected[r, c] = sum(1 for i in range(2) for j in range(2) if abs(r - 2 * i) <= 1 and abs(c - 2 * j) <= 1)
    assert torch.equal(fo[0], expected)
    assert expected[1, 1] == 4 and expected[3, 3] == 1 and expected[0, 0] == 1


def test_masked_linear_hand_count():
    lin = nn.Linear(3, 4, bias=False)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 0], [1, 0, 1.0]])
    add_mask(lin, mask)
    assert fanout([[lin]], (3,)).tolist() == [3, 0, 3]
    assert fanout([[lin]], (3,), dense=True).tolist() == [4, 4, 4]


def test_avgpool_between_layers_hand_count():
    conv = nn.Conv2d(1, 2, 1, bias=False)  # 1x1 conv to 2 channels after a 2x2 average pool
    add_mask(conv, torch.tensor([[[[1.0]]], [[[0.0]]]]))
    fo = fanout([[nn.AvgPool2d(2), conv]], (1, 4, 4))
    assert torch.equal(fo, torch.ones(1, 4, 4))  # every pixel feeds one pooled position, one surviving synapse


def _brute_force_fanout(path, shape):
    """Count non-zero Jacobian entries of the connectivity map through the real layers with |mask| weights."""
    from srsnn.snn.synops import _apply_connectivity

    f = lambda s: _apply_connectivity(s.unsqueeze(0), path, dense=False).flatten()
    J = torch.autograd.functional.jacobian(f, torch.zeros(shape))
    return (J != 0).sum(0).float()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), keep=st.floats(0.05, 1.0), size=st.sampled_from([8, 16]), time=st.booleans())
def test_counter_totals_equal_brute_force_on_random_sparse_snn(seed, keep, size, time):
    """The counter (spikes as the weight layers receive them, average-pooled and flattened) against each neuron's
    spikes times its Jacobian-counted fan-out through the pooling."""
    torch.manual_seed(seed)
    net = spiking_structure(SmallCNN(input_size=size, width=4))
    for _, m in prunable_layers(net):
        add_mask(m, (torch.rand(m.weight.shape) < keep).float())
    for n in net.modules():
        if isinstance(n, IFNeuron):
            n.threshold.data.fill_(0.2)
    snn = SpikingNetwork(net, num_steps=3, schedule="time" if time else "layer").eval()  # time: channels-last steps
    x = torch.rand(5, 1, size, size)
    with SynopCounter(snn) as c, torch.no_grad():
        snn(x)
        c.samples += 5
    # brute force: record spikes, multiply by Jacobian-counted fan-outs through each neuron's reader path
    expected = 0.0
    paths, spikes = spike_readers(net), {}
    with torch.no_grad(), record_spikes(snn, lambda n, s: spikes.__setitem__(n, spikes.get(n, 0) + s.sum((0, 1)))):
        snn(x)
    for n, p in paths.items():
        expected += float((spikes[n] * _brute_force_fanout(p[0], tuple(spikes[n].shape))).sum())
    summary = c.summary()
    assert summary["total"]["synops"] * 5 == pytest.approx(expected)
    assert 0 <= summary["total"]["synops"] <= summary["total"]["dense_synops"]


def test_residual_blocks_count_both_consumers():
    net = spiking_structure(PreActResNet(blocks=1, widen=1, base_width=4, input_size=8, in_channels=1))
    paths = spike_readers(net)
    assert sum(len(p) for p in paths.values()) == sum(1 for _ in paths) + 2  # two projected shortcuts
    snn = SpikingNetwork(net, 2).eval()
    with SynopCounter(snn) as c, torch.no_grad():
        snn(torch.rand(2, 1, 8, 8))
        c.samples += 2
    assert c.summary()["total"]["synops"] > 0


def test_ann_macs_counts_nonzero_weights_only():
    net = SmallCNN(input_size=8, width=4)
    dense = ann_macs(net, (1, 8, 8))
    for _, m in prunable_layers(net):
        add_mask(m, torch.zeros_like(m.weight))
    assert ann_macs(net, (1, 8, 8)) == 0 and dense > 0


def test_layer_labels_name_weight_layers_in_order_and_neurons_after_their_weight_layer():
    ann = SmallCNN(num_classes=10, in_channels=1, input_size=16, width=4)
    snn = SpikingNetwork(spiking_structure(ann), 2)
    labels = layer_labels(snn)
    weights = [n for n, m in snn.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    neurons = [n for n, m in snn.named_modules() if isinstance(m, IFNeuron)]
    assert [labels[n] for n in weights] == ["conv1", "conv2", "conv3", "fc1"]
    assert [labels[n] for n in neurons] == ["conv1 IF", "conv2 IF", "conv3 IF"]
    assert set(layer_labels(ann).values()) == {"conv1", "conv2", "conv3", "fc1"}  # ReLU slots are not neurons
