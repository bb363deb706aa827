import copy

import pytest
import snntorch
import torch

from nets.neurons import IFNeuron
from nets.snn import gradient_path
from nets.surrogates import make_surrogate


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
    neuron = IFNeuron(threshold=0.7, reset=reset, surrogate=sg)
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


def test_threshold_gradient_matches_unrolled_autograd():
    T, B = 5, 4
    x = torch.randn(T, B, 3) + 0.5
    sg = make_surrogate({"name": "triangular", "gamma": 1.0})
    neuron = IFNeuron(threshold=0.6, reset="subtract", surrogate=sg)
    neuron.num_steps = T
    neuron(x.reshape(T * B, 3)).sum().backward()
    theta = torch.tensor(0.6, requires_grad=True)
    v, total = torch.zeros(B, 3), 0
    for t in range(T):
        u = v + x[t]
        s = sg(u - theta)
        total = total + s.sum()
        v = u - s.detach() * theta
    total.backward()
    assert torch.allclose(neuron.threshold.grad, theta.grad, atol=1e-5)


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
