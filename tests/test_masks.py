import copy

import pytest
import torch
from torch import nn

from srsnn.ann.architectures import SmallCNN
from srsnn.errors import UserError
from srsnn.pruning.masks import add_mask, load_masked_state_dict, mask_of, prunable_layers, raw_weight, sparsity_report


def _random_masks(net, keep=0.3):
    g = torch.Generator().manual_seed(1)
    for _, m in prunable_layers(net):
        add_mask(m, (torch.rand(m.weight.shape, generator=g) < keep).float())


def test_pruned_weights_stay_exactly_zero_under_sgd_momentum_and_weight_decay():
    net = SmallCNN(input_size=8)
    _random_masks(net)
    before = {n: mask_of(m).clone() for n, m in prunable_layers(net)}
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.rand(16, 1, 8, 8)), torch.randint(0, 10, (16,))).backward()
        opt.step()
    for n, m in prunable_layers(net):
        assert torch.equal(mask_of(m), before[n])
        assert (m.weight[before[n] == 0] == 0).all()
        assert (raw_weight(m)[before[n] == 0] == 0).all()
        assert (m.weight[before[n] == 1] != 0).any()


def test_masks_survive_state_dict_round_trip_into_a_fresh_dense_model():
    net = SmallCNN(input_size=8)
    _random_masks(net)
    fresh = SmallCNN(input_size=8)
    load_masked_state_dict(fresh, net.state_dict())
    x = torch.rand(3, 1, 8, 8)
    net.eval(), fresh.eval()
    assert torch.equal(net(x), fresh(x))
    assert sparsity_report(fresh)["global"] == pytest.approx(sparsity_report(net)["global"])
    copy.deepcopy(fresh)


def test_dense_state_dict_loads_into_masked_model():
    dense = SmallCNN(input_size=8)
    masked = SmallCNN(input_size=8)
    _random_masks(masked)
    load_masked_state_dict(masked, dense.state_dict())
    assert sparsity_report(masked)["global"] < 0.01


def test_checkpoint_of_another_architecture_names_the_difference():
    with pytest.raises(UserError, match="shape mismatches"):
        load_masked_state_dict(SmallCNN(input_size=8, width=8), SmallCNN(input_size=8, width=16).state_dict())


def test_network_without_prunable_layers_is_a_clear_error():
    with pytest.raises(UserError, match="no prunable"):
        sparsity_report(nn.Sequential(nn.ReLU()))
