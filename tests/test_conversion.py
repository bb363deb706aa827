import pytest
import torch
from torch import nn

from srsnn.ann.architectures import SmallCNN
from srsnn.pruning.masks import add_mask, iter_masks, prunable_layers
from srsnn.snn.conversion import ConversionError, calibrate_thresholds, convert, spiking_structure
from srsnn.snn.network import SpikingNetwork


def _toy_ann():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


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
    from srsnn.snn.conversion import convert

    ann = torch.nn.Sequential(
        torch.nn.Linear(2, 2, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(2, 1, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(1, 2),
    )
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
    from srsnn.snn.conversion import ConversionError, convert

    ann = torch.nn.Sequential(
        torch.nn.Linear(2, 2, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(2, 1, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(1, 2),
    )
    with torch.no_grad():
        ann[0].weight.copy_(torch.eye(2))
        ann[2].weight.fill_(-1.0)  # layer 2 only ever gets negative input
    with pytest.raises(ConversionError, match=r"layer 2 .*after 2 \(Linear\).*never spike"):
        convert(ann, [torch.rand(4, 2)], num_steps=2, calib_steps=4)


@pytest.fixture(scope="module")
def trained():
    """A SmallCNN and a one-block-per-stage pre-activation ResNet trained on the digits (plain CE, a few seconds)."""
    import torch.nn.functional as F

    from datamodules.embedded import Digits
    from srsnn.ann.architectures import PreActResNet

    torch.manual_seed(0)
    dm = Digits()
    dm.setup("fit")
    x = torch.stack([dm.data_train[i][0] for i in range(len(dm.data_train))])
    y = torch.tensor([int(dm.data_train[i][1]) for i in range(len(dm.data_train))])
    nets = {"cnn": SmallCNN(width=8), "resnet": PreActResNet(blocks=1, base_width=8, in_channels=1, input_size=8)}
    for net in nets.values():
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(4):
            net.train()
            for idx in torch.randperm(len(x)).split(64):
                opt.zero_grad()
                F.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
        net.eval()
    return nets, list(x[:256].split(64)), dm.data_test.tensors[0], dm.data_test.tensors[1]


@torch.no_grad()
def _acc(net, x, y, **kw) -> float:
    return float((net(x, **kw).argmax(1) == y).float().mean())


def test_bn_fold_after_calibration_keeps_the_accuracy_of_a_trained_network(trained):
    nets, calib, x, y = trained
    kept = convert(nets["cnn"], calib, num_steps=8, calib_steps=32, bn="keep").eval()
    folded = convert(nets["cnn"], calib, num_steps=8, calib_steps=32, bn="fold").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    for T in (8, 32):
        assert abs(_acc(kept, x, y, num_steps=T) - _acc(folded, x, y, num_steps=T)) <= 0.01, T
    assert _acc(folded, x, y, num_steps=32) > _acc(nets["cnn"], x, y) - 0.05


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_rate_conversion_approaches_the_ann_as_t_grows(trained, name):
    """amplitude='threshold' (+ reset by subtraction, v_init 0.5): the SNN's predictions converge to the ANN's."""
    nets, calib, x, _ = trained
    ann = nets[name]
    with torch.no_grad():
        target = ann(x).argmax(1)
    snn = convert(ann, calib, num_steps=8, calib_steps=32, recipe="rate").eval()
    agree = [_acc(snn, x, target, num_steps=T) for T in (4, 16, 64)]
    assert agree[0] < agree[2] and agree[2] >= 0.97, agree


def test_residual_merge_is_the_same_function_in_the_ann_and_the_snn(trained):
    from srsnn.ann.architectures import Merge

    nets, calib, _, _ = trained
    ann_merges = [m for m in nets["resnet"].modules() if isinstance(m, Merge)]
    snn = convert(nets["resnet"], calib, num_steps=2, calib_steps=4)
    snn_merges = [m for m in snn.modules() if isinstance(m, Merge)]
    assert ann_merges and all(m.alpha.requires_grad for m in ann_merges + snn_merges)
    assert any(abs(m.alpha.item() - 0.5) > 1e-4 for m in ann_merges)  # trained as part of the ANN
    assert [m.alpha.item() for m in ann_merges] == [m.alpha.item() for m in snn_merges]
    branch, skip = torch.full((1, 2), 2.0), torch.full((1, 2), 4.0)
    a = ann_merges[0].alpha.clamp(0, 1).item()
    assert torch.allclose(ann_merges[0](branch, skip), torch.full((1, 2), 4 * a + 2 * (1 - a)))


@pytest.mark.parametrize(
    "layer, message",
    [
        (nn.MaxPool2d(2), r"layer 2 \(MaxPool2d\).*AvgPool2d"),
        (nn.GELU(), r"layer 2 \(GELU\).*nn.ReLU"),
    ],
)
def test_a_layer_the_converter_cannot_handle_is_named(layer, message):
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), layer, nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(ConversionError, match=message):
        convert(ann, [torch.rand(2, 1, 4, 4)])


def test_a_network_without_a_readout_after_its_last_relu_is_named():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(ConversionError, match=r"last ReLU \(2\).*readout"):
        convert(ann, [torch.rand(2, 4)])


def test_amplitude_threshold_needs_folded_bn_and_a_known_reader():
    with pytest.raises(ConversionError, match="bn='fold'"):
        convert(SmallCNN(input_size=8), [torch.rand(2, 1, 8, 8)], amplitude="threshold")

    class Odd(nn.Module):  # a neuron inside an unknown block
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(x)

    ann = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), Odd(), nn.Linear(3, 2))
    with pytest.raises(ConversionError, match="amplitude='one'"):
        convert(ann, [torch.rand(2, 4)], bn="fold", amplitude="threshold")


def test_module_mode_restores_each_submodules_own_mode_even_after_an_error():
    from srsnn.modes import module_mode

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.train()
    net[1].eval()  # a BatchNorm frozen inside a training network
    with pytest.raises(RuntimeError):
        with module_mode(net):
            assert not net.training and not net[0].training
            raise RuntimeError("boom")
    assert net.training and net[0].training and not net[1].training
    with module_mode(net, train=None):
        net[0].eval()  # code that sets modes itself
    assert net[0].training


def test_recipes_are_checked_named_and_changed_one_setting_at_a_time(tmp_path, monkeypatch):
    from srsnn.snn.conversion import RECIPES, Recipe, recipe_from

    assert RECIPES["rate"].amplitude == "threshold" and RECIPES["rate"].bn == "fold" and RECIPES["rate"].v_init == 0.5
    with pytest.raises(ConversionError, match="set bn='fold'"):  # an incoherent recipe cannot be made
        Recipe(amplitude="threshold")
    with pytest.raises(ConversionError, match="set bn='fold'"):  # nor made by changing one setting
        recipe_from("rate", bn="keep")
    assert recipe_from("paper", percentile=99.9, scale=None) == Recipe(percentile=99.9)  # None: the recipe's own
    (tmp_path / "my_recipes.py").write_text("from srsnn.snn.conversion import Recipe\nMINE = Recipe(scale=0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert recipe_from("my_recipes.MINE").scale == 0.5  # a user's own, by dotted path
    for bad, message in (("nope", "recipe 'nope'"), ("my_recipes.Recipe", "recipe 'my_recipes.Recipe'")):
        with pytest.raises(ConversionError, match=message):
            recipe_from(bad)
    with pytest.raises(ConversionError, match="not conversion settings"):
        recipe_from("paper", percentil=99)


def test_the_snn_module_takes_a_recipe_by_name_and_reads_old_checkpoints_settings_as_the_same_recipe():
    from lightning_modules import ConvertedSNN
    from srsnn.ann.architectures import SmallCNN
    from srsnn.snn.conversion import RECIPES

    net = lambda: SmallCNN(input_size=8, width=4)  # noqa: E731
    rate = ConvertedSNN(net(), recipe="rate")
    assert rate.recipe == RECIPES["rate"] and rate.neuron_kwargs["reset"] == "subtract"
    # a checkpoint written before recipes stored every setting: they make the paper's recipe again
    old = dict(
        reset="zero",
        min_threshold=0.03,
        v_init=0.0,
        bn="keep",
        amplitude="one",
        calib_steps=100,
        percentile=99.7,
        scale=0.3,
        calib_order="reference",
    )
    assert ConvertedSNN(net(), **old).recipe == RECIPES["paper"]
    with pytest.raises(ConversionError, match="set bn='fold'"):
        ConvertedSNN(net(), amplitude="threshold")


def _converted_pair(beta: float):
    """One small ANN converted twice from the same calibration batch: with IF neurons and with snnTorch's Leaky."""
    from srsnn.ann.architectures import SmallCNN

    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, in_channels=1, num_classes=4, width=4).eval()
    batch = [torch.rand(8, 1, 8, 8)]
    return convert(ann, batch, num_steps=4).eval(), convert(ann, batch, num_steps=4, neuron="leaky", beta=beta).eval()


def test_conversion_to_leaky_neurons_keeps_thresholds_and_with_beta_one_is_the_if_network():
    from snntorch import Leaky

    from srsnn.snn.native import NativeNet, spiking_neurons
    from srsnn.snn.network import stateless_prefix
    from srsnn.snn.synops import SynopCounter, ann_macs

    x = torch.rand(16, 1, 8, 8)
    snn_if, leaky = _converted_pair(1.0)
    assert isinstance(leaky, NativeNet) and all(isinstance(m, Leaky) for _, m in spiking_neurons(leaky))
    thresholds = [float(n.effective_threshold().detach()) for n in snn_if.neurons]
    assert [float(m.threshold) for _, m in spiking_neurons(leaky)] == thresholds
    with torch.no_grad():
        assert torch.equal(snn_if(x), leaky(x))  # beta = 1: the IF neuron, step by step
        leaky(x)  # NativeNet's first eval forward checks determinism with a second one: counted apart below
    # one synop counter, the same counts for the fused IF network (the analog prefix computed once for all T steps)
    # and its snnTorch twin run step by step (the prefix every step)
    ours, theirs = SynopCounter(snn_if), SynopCounter(leaky.net)
    with torch.no_grad(), ours:
        snn_if(x)
    with torch.no_grad(), theirs:
        leaky(x)
    ours.samples = theirs.samples = len(x)
    a, b = ours.summary(), theirs.summary()
    assert a["total"] == b["total"] and a["synops_by_layer"] == b["synops_by_layer"] and a["total"]["synops"] > 0
    prefix = torch.nn.Sequential(*list(snn_if.net)[: stateless_prefix(snn_if.net)])
    assert a["input_macs"] == b["input_macs"] == ann_macs(prefix, (1, 8, 8)) * 4  # the analog input, every step
    # the energy monitor names layers by layers_of: the same names the counter keys its records by, either runner
    from srsnn.snn.network import layers_of
    from srsnn.snn.synops import layer_labels

    for model, counted in ((snn_if, a), (leaky, b)):
        assert set(counted["layers"]) | set(counted["synops_by_layer"]) <= set(layer_labels(layers_of(model)))
    _, leak = _converted_pair(0.8)
    with torch.no_grad():
        assert not torch.equal(snn_if(x), leak(x))  # evaluated as is: the leak changes the rates


def test_a_leaky_conversion_is_evaluated_through_the_snntorch_gradient_paths():
    from srsnn.robustness.budget import AdaptiveBudget
    from srsnn.robustness.paths import ensemble, path_modes, snn_attack_paths
    from srsnn.robustness.runner import Evaluator

    _, leaky = _converted_pair(0.9)
    for p in leaky.parameters():
        p.requires_grad_(False)
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 4, (12,))
    members, modes = ensemble(leaky), path_modes(leaky)
    assert modes == ("assg", "hart", "pdsg") and {"rga", "bptr", "model"} <= {m["name"] for m in members}
    budget = AdaptiveBudget(top_k=1, steps=3, max_targets=2, other_targets=1, square_queries=10, check_rounds=1,
                            snn_steps=3, snn_restarts=1)  # fmt: skip
    ev = Evaluator(leaky, members, [0.1], [{"name": "fgsm"}], 4, budget, batch_size=6,
                   snn_paths=snn_attack_paths(modes=modes))  # fmt: skip
    out = ev.run(x, y)
    res = out["eps"]["0.1"]
    assert out["interrupted"] is None and len(res["per_sample"]["worst"]) == 12
    assert res["robust_worst"] <= sum(out["clean"])
    assert [m["mode"] for m in ev.snn_paths] == ["assg", "hart", "pdsg"] and any(
        k.endswith(":sapgd") for k in ev.seconds
    )


@pytest.mark.parametrize("mode, steps", [("hart", 4), ("rga", 4), ("bptr", 4), ("assg", 1), ("pdsg", 1)])
def test_every_gradient_path_is_one_definition_for_the_if_kernel_and_snntorch_neurons(mode, steps):
    """A path of ``srsnn.snn.gradients`` is written once: through the IF network's fused kernel and through its
    beta = 1 conversion to snnTorch's Leaky (step by step, ``spike_grad`` swapped) it gives the same input gradient.
    ASSG and PDSG keep the membrane chain, and snnTorch's Leaky (``reset_delay=False``) lets the gradient through its
    reset where these paths on the IF neuron detach it: they are compared on one step, where no chain exists."""
    from srsnn.snn.network import gradient_path

    snn_if, leaky = _converted_pair(1.0)
    snn_if.num_steps = leaky.net.num_steps = steps
    x, w = torch.rand(16, 1, 8, 8), torch.randn(16, 4)
    with torch.no_grad():
        leaky(x)  # NativeNet's first eval forward checks determinism with a second one (a step of ASSG's means)
    grads = []
    for net in (snn_if, leaky):
        xi = x.clone().requires_grad_()
        with gradient_path(net, mode, None, None):
            for _ in range(2):  # ASSG's running means carry over from the first iteration
                (g,) = torch.autograd.grad((net(xi) * w).sum(), xi)
        grads.append(g)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6), (grads[0] - grads[1]).abs().max()
