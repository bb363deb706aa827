import copy

import pytest
import snntorch
import torch

from srsnn.ann.architectures import SmallCNN
from srsnn.modes import frozen_parameters
from srsnn.snn.conversion import convert
from srsnn.snn.network import gradient_path
from srsnn.snn.neurons import IFNeuron
from srsnn.snn.surrogates import make_surrogate


def naive_if(x: torch.Tensor, theta: float, reset: str, surrogate) -> torch.Tensor:
    """The snnTorch tutorial loop: one ``snn.Leaky(beta=1)`` step per time step."""
    # snnTorch's default delayed reset gives the same spike trains as resetting right after the spike
    lif = snntorch.Leaky(beta=1.0, threshold=theta, spike_grad=surrogate, reset_mechanism=reset)
    mem = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        spk, mem = lif(x[t], mem)
        out.append(spk)
    return torch.stack(out)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_multistep_equals_naive_snntorch_loop_forward_and_backward(reset):
    T, B = 6, 5
    x = (torch.randn(T, B, 7) * 0.8 + 0.3).requires_grad_(True)
    sg = make_surrogate("triangular")
    neuron = IFNeuron(threshold=0.7, reset=reset, surrogate=sg, detach_reset=True)  # snnTorch detaches the reset
    neuron.num_steps = T
    ours = neuron(x.reshape(T * B, 7)).reshape(T, B, 7)
    x2 = x.detach().clone().requires_grad_(True)
    ref = naive_if(x2, 0.7, reset, sg)
    assert torch.equal(ours, ref)
    assert ours.sum() > 0
    w = torch.randn_like(ours)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_input_and_threshold_gradients_match_unrolled_autograd_with_and_without_detached_reset():
    T, B = 5, 4
    x = torch.randn(T, B, 3) + 0.5
    sg = make_surrogate({"name": "triangular", "gamma": 1.0})
    for reset in ("subtract", "zero"):
        for detach in (True, False):
            neuron = IFNeuron(threshold=0.6, reset=reset, surrogate=sg, detach_reset=detach)
            neuron.num_steps = T
            xn = x.clone().requires_grad_(True)
            neuron(xn.reshape(T * B, 3)).mul(torch.arange(1.0, T * B * 3 + 1).reshape(T * B, 3)).sum().backward()
            theta = torch.tensor(0.6, requires_grad=True)
            xa = x.clone().requires_grad_(True)
            v, total = torch.zeros(B, 3), 0
            for t in range(T):
                u = v + xa[t]
                s = sg(u - theta)
                total = total + (s * torch.arange(1.0, B * 3 + 1).reshape(B, 3).add(t * B * 3)).sum()
                r = s.detach() if detach else s
                v = u - r * theta if reset == "subtract" else u * (1 - r)
            total.backward()
            assert torch.allclose(neuron.threshold.grad, theta.grad, rtol=1e-4, atol=1e-4), (reset, detach)
            assert torch.allclose(xn.grad, xa.grad, rtol=1e-4, atol=1e-4), (reset, detach)


@pytest.mark.parametrize("mode", ["bptr", "relu"])
def test_bptr_and_relu_modes_give_finite_nonzero_input_gradients(mode):
    neuron = IFNeuron(threshold=0.5)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), neuron, torch.nn.Linear(6, 2))
    x = torch.rand(4 * 3, 4, requires_grad=True)
    with gradient_path(net, mode=mode):
        neuron.num_steps = 4 if mode == "bptr" else 1
        net(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert neuron.mode == "spike"  # restored


def test_threshold_is_clamped_and_state_is_not_kept():
    neuron = IFNeuron(threshold=-1.0, min_threshold=0.03)
    assert neuron.effective_threshold().item() == pytest.approx(0.03)
    neuron.num_steps = 2
    a = neuron(torch.full((2, 3), 0.02))
    b = neuron(torch.full((2, 3), 0.02))
    assert torch.equal(a, b)  # no membrane carried between calls
    copy.deepcopy(neuron)  # no autograd history in module state
    assert neuron not in snntorch.SpikingNeuron.instances


def _small_snn(reset: str, detach: bool = False):
    from srsnn.snn.conversion import spiking_structure

    torch.manual_seed(3)
    ann = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.BatchNorm2d(5),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(5 * 3 * 3, 3),
    )
    net = spiking_structure(ann, reset=reset, surrogate={"name": "triangular", "gamma": 1.0}, detach_reset=detach)
    for i, n in enumerate(m for m in net if isinstance(m, IFNeuron)):
        n.threshold.data.fill_(0.3 + 0.2 * i)
    return net


def _grads(snn, x):
    x = x.clone().requires_grad_(True)
    snn.zero_grad()
    out = snn(x)
    (out * torch.arange(1.0, 4.0)).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in snn.parameters() if p.grad is not None]


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_time_schedule_equals_layer_schedule_forward_and_backward(reset):
    from srsnn.snn.network import SpikingNetwork

    net = _small_snn(reset).eval()  # BN in eval mode: the schedules differ only in BN training statistics
    x = torch.rand(6, 2, 6, 6) * 2
    out_l, gx_l, gp_l = _grads(SpikingNetwork(net, 5, schedule="layer"), x)
    time = SpikingNetwork(net, 5, schedule="time")
    out_t, gx_t, gp_t = _grads(time, x)
    assert torch.allclose(out_l, out_t, atol=1e-6) and out_l.abs().sum() > 0
    assert gx_t.abs().sum() > 0 and torch.allclose(gx_l, gx_t, atol=1e-5)
    assert len(gp_l) == len(gp_t) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(gp_l, gp_t))
    assert all(n.state is None and not n.stepping for n in time.neurons)  # nothing kept after the forward
    copy.deepcopy(time)
    # rate (Poisson) coding: the same random draws give the same outputs under both schedules
    outs = []
    for schedule in ("layer", "time"):
        torch.manual_seed(5)
        outs.append(SpikingNetwork(net, 5, encoding="poisson", schedule=schedule)(x.clamp(0, 1)))
    assert torch.allclose(*outs, atol=1e-6) and outs[0].abs().sum() > 0


def test_time_schedule_in_training_equals_the_snntorch_loop():
    """BN in training mode: per-step batch statistics, exactly what snnTorch's tutorial loop computes."""
    from srsnn.snn.network import SpikingNetwork

    net = _small_snn("zero", detach=True).train()
    x = torch.rand(6, 2, 6, 6) * 2
    ours = SpikingNetwork(net, 4, schedule="time")(x)
    leaky = {
        i: snntorch.Leaky(
            beta=1.0, threshold=float(m.threshold.detach()), spike_grad=m.spike_grad, reset_mechanism="zero"
        )
        for i, m in enumerate(net)
        if isinstance(m, IFNeuron)
    }
    mems, ref = {i: None for i in leaky}, 0
    for _ in range(4):
        h = x
        for i, m in enumerate(net):
            if i in leaky:
                mems[i] = torch.zeros_like(h) if mems[i] is None else mems[i]
                h, mems[i] = leaky[i](h, mems[i])
            else:
                h = m(h)
        ref = ref + h
    assert torch.allclose(ours, ref / 4, atol=1e-6)
    # the spike recorder sees every step under either schedule: T calls of one step, or one call of T steps
    from srsnn.snn.network import record_spikes

    counts = {}
    for schedule in ("time", "layer"):
        seen = []
        with (
            torch.no_grad(),
            record_spikes(SpikingNetwork(net.eval(), 4, schedule=schedule), lambda n, s: seen.append(s)),
        ):
            SpikingNetwork(net.eval(), 4, schedule=schedule)(x)
        counts[schedule] = (sum(s.shape[0] for s in seen), sum(float(s.sum()) for s in seen))
    assert counts["time"] == counts["layer"] and counts["time"][0] == 4 * len(SpikingNetwork(net, 4).neurons)


def test_v_init_half_rounds_the_rate_instead_of_flooring_it():
    """Constant input 0.36 theta for T = 10, reset by subtraction: floor(3.6) = 3 spikes from v_0 = 0,
    floor(0.5 + 3.6) = 4 = round(3.6) from v_0 = theta / 2."""
    counts = []
    for v_init in (0.0, 0.5):
        n = IFNeuron(threshold=1.0, reset="subtract", v_init=v_init)
        n.num_steps = 10
        counts.append(int(n(torch.full((10, 1), 0.36)).sum()))
    assert counts == [3, 4]


def test_auto_schedule_is_time_on_cpu_for_large_layers_and_layer_otherwise():
    from srsnn.snn.network import resolve_schedule

    assert resolve_schedule("auto", torch.device("cpu"), 32 * 32 * 32) == "time"
    assert resolve_schedule("auto", torch.device("cpu"), 16 * 8 * 8) == "layer"  # a tiny layer: per-step overhead
    assert resolve_schedule("auto", torch.device("cuda"), 32 * 32 * 32) == "layer"
    assert resolve_schedule("layer", torch.device("cpu"), 32 * 32 * 32) == "layer"


def test_frozen_parameters_give_the_same_input_gradient_and_restore_every_flag():
    torch.manual_seed(0)
    ann = SmallCNN(width=4).eval()
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    snn = convert(ann, [torch.rand(16, 1, 8, 8)], num_steps=4).eval()
    snn.neurons[0].threshold.requires_grad_(False)  # a flag that differs from the others must come back as it was
    flags = [p.requires_grad for p in snn.parameters()]
    x = torch.rand(6, 1, 8, 8)
    y = torch.arange(6) % 10

    def grad():
        xi = x.clone().requires_grad_(True)
        with gradient_path(snn, "spike", {"name": "exponential", "gamma_d": 1.0, "gamma_s": 2.0}):
            (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(snn(xi), y), xi)
        return g

    ref = grad()
    with frozen_parameters(snn, None):
        assert not any(p.requires_grad for p in snn.parameters())
        frozen = grad()
    assert [p.requires_grad for p in snn.parameters()] == flags
    assert ref.abs().sum() > 0 and torch.equal(frozen, ref)
