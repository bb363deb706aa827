"""Each of the 19 gradient paths gives the input gradient of the reference implementation's formulas.

The port below is written from the formulas of IGITUGraz/RobustSNNConversion (``models/layers.py``) as docs/method.md
states them, independently of ``srsnn.snn.neurons``: a Python loop over T with plain autograd, the reset *not*
detached, BPTR as RateBp (backward = grad * 1[mean_t(spikes) > 0]), and the Act path as a plain ReLU with T = 0.
"""

import pytest
import torch
import torch.nn.functional as F

from srsnn.ann.architectures import SmallCNN
from srsnn.robustness.paths import paper_ensemble
from srsnn.snn.conversion import convert
from srsnn.snn.network import gradient_path
from srsnn.snn.neurons import IFNeuron

T = 4


def _derivative(sg: dict, x: torch.Tensor) -> torch.Tensor:
    name = sg["name"]
    if name == "triangular":
        g = sg["gamma"]
        return (g - x.abs()).clamp(min=0) / g / g
    if name == "exponential":
        return sg["gamma_d"] * torch.exp(-sg["gamma_s"] * x.abs())
    if name == "rectangular":
        return (x.abs() < sg["gamma"] / 2).float() / sg["gamma"]
    assert name == "straight_through"
    return torch.ones_like(x)


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sg):
        ctx.save_for_backward(x)
        ctx.sg = sg
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * _derivative(ctx.sg, x), None


class _RateBp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, theta, hard):
        v, out = 0.0, []
        for t in range(x.shape[0]):
            v = v + x[t]
            s = (v - theta >= 0).float()
            v = (1 - s) * v if hard else v - s * theta
            out.append(s)
        out = torch.stack(out)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (out.mean(0, keepdim=True) > 0).float(), None, None


def _reference_forward(net: torch.nn.Sequential, x: torch.Tensor, member: dict) -> torch.Tensor:
    steps = 0 if member["mode"] == "relu" else T
    h = x if steps == 0 else x.unsqueeze(0).repeat(T, 1, 1, 1, 1).flatten(0, 1)
    for m in net:
        if not isinstance(m, IFNeuron):
            h = m(h)
            continue
        theta = m.threshold.detach().clamp(min=0.03)
        hard = m.reset_mode == "zero"
        if steps == 0:
            h = torch.relu(h)
            continue
        xt = h.reshape(T, -1, *h.shape[1:])
        if member["mode"] == "bptr":
            s = _RateBp.apply(xt, theta, hard)
        else:
            v, out = 0.0, []
            for t in range(T):
                v = v + xt[t]
                s_t = _Spike.apply(v - theta, member["surrogate"])
                v = (1 - s_t) * v if hard else v - s_t * theta  # the gradient flows through the reset
                out.append(s_t)
            s = torch.stack(out)
        h = s.flatten(0, 1)
    return h if steps == 0 else h.reshape(T, -1, *h.shape[1:]).mean(0)


@pytest.fixture(scope="module")
def snn():
    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, width=6, mean=[0.2], std=[0.3])
    for m in ann.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return convert(ann, [torch.rand(64, 1, 8, 8)], num_steps=T, calib_steps=8, scale=0.5).eval()


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("member", paper_ensemble(), ids=lambda m: m["name"])
def test_member_input_gradient_matches_the_reference_formulas(snn, member, reset):
    for n in snn.neurons:
        n.reset_mode = reset
    torch.manual_seed(1)
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    xo = x.clone().requires_grad_(True)
    with gradient_path(snn, member["mode"], member.get("surrogate")):
        (g_ours,) = torch.autograd.grad(F.cross_entropy(snn(xo), y, reduction="sum"), xo)
    xr = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(_reference_forward(snn.net, xr, member), y, reduction="sum"), xr)
    assert g_ref.abs().sum() > 0, "the reference gradient vanished: the test network does not spike"
    cos = F.cosine_similarity(g_ours.flatten(), g_ref.flatten(), dim=0)
    assert cos >= 0.999, f"{member['name']}: cosine {cos:.5f}"
    for n in snn.neurons:
        n.reset_mode = "zero"


@pytest.mark.parametrize("neuron", ["if", "leaky"])
def test_a_samples_logits_and_input_gradient_are_the_same_bits_in_a_batch_of_any_size(neuron):
    """What an attack computes for a sample does not depend on how many samples share its batch (so the evaluation's
    per-sample records are the same on any process count, where a rank's survivors make other batches): through the
    evaluation's ``PaddedRows``, every path of the network's ensemble and tier gives a sample's logits and input
    gradient bit for bit as in a batch of 32. The readout over time adds step by step (a ``mean(0)`` over time rounds
    by the batch's size) and a batch of 1-3 rows is padded (the CPU kernels' input gradients round it otherwise)."""
    from srsnn.robustness.paths import (
        MODEL,
        DeployedJudge,
        PaddedRows,
        changes_forward,
        ensemble,
        path_modes,
        snn_attack_paths,
        use_path,
    )
    from srsnn.snn.network import reset_path_state

    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, in_channels=1, num_classes=10, width=16).eval()
    kwargs = {} if neuron == "if" else {"neuron": "leaky", "beta": 0.9}
    snn = convert(ann, [torch.rand(64, 1, 8, 8)], num_steps=8, **kwargs).eval()
    net = PaddedRows(snn)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    paths = ensemble(snn) + snn_attack_paths(modes=path_modes(snn))
    assert {"assg", "hart"} <= {p["mode"] for p in paths}

    def run(member, k):
        source, member = (DeployedJudge(net, member), MODEL) if changes_forward(member) else (net, member)
        reset_path_state(net)
        xk = x[:k].clone().requires_grad_(True)
        with use_path(source, member):
            z = source(xk)
            (g,) = torch.autograd.grad(F.cross_entropy(z, y[:k], reduction="sum"), xk)
        return z.detach(), g

    differ = {}
    with torch.no_grad():  # a forward alone (Square's queries, the judgement of an example)
        z = net(x)
        differ.update({f"forward of {k}": k for k in (1, 2, 3, 5) if not torch.equal(net(x[:k]), z[:k])})
    for member in paths:
        z, g = run(member, 32)
        assert g.abs().sum() > 0, member["name"]
        for k in (1, 2, 3, 5, 13):
            zk, gk = run(member, k)
            if not (torch.equal(zk, z[:k]) and torch.equal(gk, g[:k])):
                differ.setdefault(member["name"], []).append(k)
    assert not differ, differ
