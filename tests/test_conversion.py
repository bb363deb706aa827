import pytest
import torch
from torch import nn

from nets.architectures import SmallCNN
from nets.conversion import ConversionError, calibrate_thresholds, convert, spiking_structure
from nets.masks import add_mask, iter_masks, prunable_layers
from nets.snn import SpikingNetwork


def _toy_ann():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


def _scaled_reference(ann, snn, x):
    """The rate-equivalent ANN (clamp(x / theta, 0, 1) per neuron) that the SNN approximates."""
    from nets.snn import gradient_path
    with gradient_path(snn.net, "relu"), torch.no_grad():
        return snn(x)


def test_snn_rates_approach_rate_equivalent_ann():
    """Reset by subtraction + 100th-percentile thresholds: as T grows the SNN converges to the ANN whose
    neurons output their rate, clamp(a / theta, 0, 1) (spikes have amplitude 1, not theta)."""
    ann = _toy_ann()
    x = torch.rand(64, 1, 4, 4)
    errs = []
    for T in (4, 32, 256):
        snn = convert(ann, [x], num_steps=T, calib_steps=32, percentile=100.0, scale=1.0, reset="subtract")
        with torch.no_grad():
            errs.append((snn(x) - _scaled_reference(ann, snn, x)).abs().mean().item())
    assert errs[2] < errs[0] / 8 and errs[1] < errs[0], errs


def test_mask_identical_before_and_after_conversion():
    ann = SmallCNN(input_size=8)
    g = torch.Generator().manual_seed(0)
    for _, m in prunable_layers(ann):
        add_mask(m, (torch.rand(m.weight.shape, generator=g) < 0.2).float())
    before = [m.clone() for _, m in iter_masks(ann)]
    snn = convert(ann, [torch.rand(8, 1, 8, 8)], num_steps=2, calib_steps=4)
    after = [m for _, m in iter_masks(snn)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_calibration_restores_mode_even_if_it_raises():
    snn = SpikingNetwork(spiking_structure(SmallCNN(input_size=8)), num_steps=2)
    snn.eval()
    with pytest.raises(ConversionError, match="calibrate"):
        calibrate_thresholds(snn, [torch.rand(4, 3, 8, 8)], calib_steps=2)  # wrong channel count
    assert not any(m.training for m in snn.modules())
    bn = [m for m in snn.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert bn.momentum == 0.1


def test_conversion_errors_name_the_step():
    with pytest.raises(ConversionError, match="check"):
        convert(nn.Sequential(nn.Linear(2, 2)), [torch.rand(2, 2)])
    with pytest.raises(ConversionError, match="percentile"):
        convert(_toy_ann(), [torch.rand(2, 1, 4, 4)], percentile=0)
    with pytest.raises(ConversionError, match="no calibration batches"):
        convert(_toy_ann(), [])


def test_bn_fold_matches_kept_bn_in_eval():
    ann = SmallCNN(input_size=8)
    ann.train()
    with torch.no_grad():
        for _ in range(3):
            ann(torch.rand(32, 1, 8, 8))
    ann.eval()
    kept = spiking_structure(ann, bn="keep").eval()
    folded = spiking_structure(ann, bn="fold").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        a, b = SpikingNetwork(kept, 4)(x), SpikingNetwork(folded, 4)(x)
    assert torch.allclose(a, b, atol=1e-4)


def _calibrated(order: str) -> list[float]:
    from nets.conversion import convert

    ann = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(1, 2))
    with torch.no_grad():
        ann[0].weight.copy_(torch.eye(2))
        ann[2].weight.copy_(torch.tensor([[1.0, -0.5]]))
    snn = convert(ann, [torch.tensor([[1.0, 0.3]])], num_steps=4, calib_steps=8, percentile=100, scale=0.3, order=order)
    return [float(n.threshold.detach()) for n in snn.neurons]


def test_calibration_order_pins_hand_computed_thresholds():
    """Layer 1 sees 1.0 and 0.3 every step: raw threshold 1.0. Reference order (layer 1 at 1.0 while layer 2 is
    calibrated): neuron b fires every 4th step, so layer 2 sees 1 - 0.5 s_b in {1, 0.5}: raw 1.0; both scaled by
    0.3 at the end -> [0.3, 0.3]. Sequential (layer 1 already at 0.3): both fire every step, layer 2 sees 0.5
    -> [0.3, 0.15]."""
    assert _calibrated("reference") == pytest.approx([0.3, 0.3], abs=1e-6)
    assert _calibrated("sequential") == pytest.approx([0.3, 0.15], abs=1e-6)


def test_a_layer_that_never_gets_input_is_named():
    from nets.conversion import ConversionError, convert

    ann = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(1, 2))
    with torch.no_grad():
        ann[0].weight.copy_(torch.eye(2))
        ann[2].weight.fill_(-1.0)  # layer 2 only ever gets negative input
    with pytest.raises(ConversionError, match=r"layer 2 .*after 2 \(Linear\).*never spike"):
        convert(ann, [torch.rand(4, 2)], num_steps=2, calib_steps=4)
