"""The published SNN-specific attacks: ASSG and HART as gradient paths over the IF neuron, SA-PGD as an attack,
and their place in the adaptive tier (hyperparameters chosen on the validation split)."""

import math

import pytest
import torch

from srsnn.robustness.attacks import SAPGD, make_attack
from srsnn.robustness.paths import snn_attack_paths
from srsnn.snn.gradients import assg_omega
from srsnn.snn.network import gradient_path
from srsnn.snn.neurons import IFNeuron


def _grad(neuron: IFNeuron, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((neuron(x) * w).sum(), x)
    return g


def _neuron(theta: float, T: int, reset: str = "zero") -> IFNeuron:
    n = IFNeuron(threshold=theta, reset=reset, min_threshold=1e-6)
    n.num_steps = T
    return n


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_assg_is_the_atan_surrogate_with_per_step_sharpness_through_a_detached_reset(reset):
    torch.manual_seed(0)
    T, B, F = 4, 3, 5
    n = _neuron(0.7, T, reset)
    x, w = torch.rand(T * B, F), torch.randn(T * B, F)
    with gradient_path(n, "assg", None, 0.4):
        g = _grad(n, x, w)
        (m, d) = n.path.sharpness.stats[0]
    # a reference: the unrolled loop with autograd, the same per-step alphas (first call: M = theta, D = 0 updated once)
    xs, ws = x.view(T, B, F).clone().requires_grad_(True), w.view(T, B, F)
    v, out, theta, omega = torch.zeros(B, F), [], 0.7, assg_omega(0.4)
    for t in range(T):
        u = v + xs[t]
        with torch.no_grad():
            mt = 0.9 * theta + 0.1 * (u - theta).abs()
            dt = 0.1 * ((u - theta).abs() - mt).abs()
            a = omega / (mt + 1.5 * dt + 1e-4 * theta)
        s_val = (u >= theta).float()
        sg = (a / 2) / (1 + (math.pi / 2 * a * (u - theta)) ** 2)
        s = s_val + sg.detach() * (u - u.detach())  # value s, gradient sg
        v = u * (1 - s_val) if reset == "zero" else u - s_val * theta
        out.append(s)
    (ref,) = torch.autograd.grad((torch.stack(out) * ws).sum(), xs)
    assert torch.allclose(g.view(T, B, F), ref, atol=1e-6)
    assert n.path is None and n.mode == "spike"  # the running means live for one block only
    assert m.shape == (B, F) and d.shape == (B, F)


def test_assg_and_hart_scale_with_the_threshold():
    """Scaled inputs and threshold (c x) give the same spikes and an input gradient scaled by 1 / c: the paths adapt
    to each layer's threshold, as fixed-width surrogates do not."""
    torch.manual_seed(0)
    T, B, F, c = 4, 2, 6, 8.0
    x, w = torch.rand(T * B, F), torch.randn(T * B, F)
    for mode, param in (("assg", 0.425), ("hart", 1.0)):
        a, b = _neuron(0.5, T), _neuron(0.5 * c, T)
        with gradient_path(a, mode, None, param), gradient_path(b, mode, None, param):
            assert torch.equal(a(x), b(c * x))
            assert torch.allclose(_grad(a, x, w), c * _grad(b, c * x, w), rtol=1e-4, atol=1e-6)


def test_hart_gives_every_step_the_mean_of_the_local_surrogate_gradients():
    torch.manual_seed(0)
    T, B, F, theta, gamma = 4, 2, 5, 0.6, 1.5
    n = _neuron(theta, T)
    x, w = torch.rand(T * B, F), torch.randn(T * B, F)
    with gradient_path(n, "hart", None, gamma):
        g = _grad(n, x, w).view(T, B, F)
    u, v = [], torch.zeros(B, F)
    for t in range(T):  # the detached history: u_t from the forward's own membrane
        ut = v + x.view(T, B, F)[t]
        u.append(ut)
        v = ut * (ut < theta)
    width = gamma * theta
    local = torch.stack([(width - (ut - theta).abs()).clamp_min(0) / width**2 for ut in u]) * w.view(T, B, F)
    assert torch.allclose(g, local.mean(0, keepdim=True).expand_as(g), atol=1e-6)


def test_sapgd_halves_its_step_on_the_published_schedule_and_stays_in_the_ball():
    assert sorted(SAPGD(torch.nn.Identity(), 0.1, steps=100).halvings()) == [22, 41, 57, 70, 80, 87, 93, 99]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    x = torch.rand(64, 1, 4, 4)
    y = net(x).argmax(1)
    adv = make_attack("sapgd", net, 0.2, steps=30, n_restarts=2)(x, y)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    fooled = net(adv).argmax(1) != y
    pgd = make_attack("pgd", net, 0.2, steps=30)(x, y)
    assert fooled.sum() >= (net(pgd).argmax(1) != y).sum() > 0  # a linear model: both find the easy ones


def test_snn_paths_name_their_hyperparameters():
    assert [m["name"] for m in snn_attack_paths(0.4, 2)] == ["assg(0.4)", "hart(2)"]


def _snn_and_data(n: int = 24):
    from srsnn.ann.architectures import SmallCNN
    from srsnn.snn.conversion import convert

    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3])
    snn = convert(ann, [torch.rand(32, 1, 8, 8)], num_steps=3, calib_steps=4).eval()
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        y = snn(x).argmax(1)
    return snn, x, y


def test_the_tier_attacks_through_assg_and_hart_with_sapgd_and_rounds_rerun_them():
    from srsnn.robustness.budget import AdaptiveBudget
    from srsnn.robustness.paths import paper_ensemble
    from srsnn.robustness.runner import Evaluator

    snn, x, y = _snn_and_data()
    budget = AdaptiveBudget(
        top_k=1, steps=3, max_targets=1, other_targets=1, square_queries=0, check_rounds=1, snn_steps=4, snn_restarts=1,
        allocation="uniform",
    )  # fmt: skip
    ev = Evaluator(snn, paper_ensemble()[:2], [0.02], [{"name": "fgsm"}], 10, budget, snn_paths=snn_attack_paths())
    units = ev.plan.adaptive_units(ev.members)
    assert [(u.attack, u.member["name"]) for u in units if u.attack == "sapgd"] == [
        ("sapgd", "assg(0.425)"),
        ("sapgd", "hart(1)"),
    ]
    assert all(u.kwargs == {"steps": 4, "n_restarts": 1} for u in units if u.attack == "sapgd")
    check = ev.plan.check_units(ev.members, 0)
    assert [u.kwargs["steps"] for u in check if u.attack == "sapgd"] == [8, 8]
    out = ev.run(x, y)
    assert out["interrupted"] is None and "adaptive:sapgd" in ev.seconds
    no_snn = Evaluator(snn, paper_ensemble()[:2], [0.02], [{"name": "fgsm"}], 10, budget)
    assert not [u for u in no_snn.plan.adaptive_units(no_snn.members) if u.attack == "sapgd"]


def test_sapgd_takes_the_first_rounds_starts_it_is_given_and_the_rule_otherwise():
    from srsnn.errors import UserError
    from srsnn.robustness.budget import AdaptiveBudget
    from srsnn.robustness.paths import paper_ensemble
    from srsnn.robustness.runner import Evaluator

    snn, _, _ = _snn_and_data()
    pairs = frozenset({("sapgd", "assg(0.425)"), ("sapgd", "hart(1)")})

    def starts(budget, round_):
        ev = Evaluator(snn, paper_ensemble()[:2], [0.02], [{"name": "fgsm"}], 10, budget, snn_paths=snn_attack_paths())
        units = ev.plan.focus_units(ev.members, round_, pairs, ("sapgd", "assg(0.425)"))
        return [(u.kwargs.get("n_restarts"), u.kwargs["steps"]) for u in units if u.attack == "sapgd"]

    rule = AdaptiveBudget(snn_steps=4, snn_restarts=1, allocation="margin")
    assert starts(rule, 0) == [(3, 8), (1, 8)]  # the first round at 2x steps, the workhorse at 3x starts
    assert starts(rule, 1) == [(1, 4), (1, 4)]
    more = AdaptiveBudget(snn_steps=4, snn_restarts=1, allocation="margin", snn_first_round_starts=10)
    assert starts(more, 0) == [(10, 4), (10, 4)] and starts(more, 1) == [(1, 4), (1, 4)]  # many short starts
    assert "SA-PGD at 10 starts" in more.describe(3, 10) and "SA-PGD at" not in rule.describe(3, 10)
    with pytest.raises(UserError, match="snn_first_round_starts"):
        AdaptiveBudget(snn_first_round_starts=-1, allocation="margin")
    with pytest.raises(UserError, match="applies to allocation margin"):
        AdaptiveBudget(snn_first_round_starts=10, allocation="uniform")


def test_tuning_picks_from_the_grid_on_the_samples_it_is_given_and_prefers_the_default_on_ties():
    from srsnn.robustness.tuning import GRIDS, tune_snn_paths

    snn, x, y = _snn_and_data(16)
    tie = tune_snn_paths(snn, x, y, 0.0, steps=2)  # eps 0: nothing breaks, every value ties
    assert tie["assg"] == 0.425 and tie["hart"] == 1.0
    out = tune_snn_paths(snn, x, y, 0.3, steps=5)
    for mode, (_, grid, _) in GRIDS.items():
        assert out[mode] in grid and set(out["broken"][mode]) == {f"{v:g}" for v in grid}
        assert out["broken"][mode][f"{out[mode]:g}"] == max(out["broken"][mode].values())
