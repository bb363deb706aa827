"""Bring your own SNN: an snnTorch network evaluated, counted and fine-tuned through train.py (README's commands)."""

import json

import pytest
import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from helpers import ROOT, run_cli, run_main, tiny_overrides
from srsnn.errors import UserError
from srsnn.snn.native import NativeNet, describe, reset_states, spiking_neurons
from srsnn.snn.network import gradient_path, reset_path_state
from srsnn.snn.synops import SynopCounter

CONFIG = str(ROOT / "conf" / "digits" / "native_snn.yaml")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    import sys

    sys.path.insert(0, str(ROOT))
    from examples.tutorial_snn import train

    path = str(tmp_path_factory.mktemp("native") / "mynet.pt")
    torch.set_num_threads(1)
    assert train(path, epochs=8) > 0.8  # plain BPTT: the README's example trains
    return path


def _evaluation(run_dir) -> tuple[dict, dict]:
    ev = next(run_dir.rglob("evaluation"))
    return json.loads((ev / "attacks.json").read_text()), json.loads((ev / "energy.json").read_text())


def test_the_readme_commands_evaluate_count_and_fine_tune_the_tutorial_net(weights, tmp_path):
    quick = ["--evaluation.num_samples", "12", "--evaluation.adaptive", "quick"]
    run_cli("train.py", "test", "--config", CONFIG, "--model.init_args.weights", weights,
            *tiny_overrides(tmp_path / "test"), *quick)  # fmt: skip
    attacks, energy = _evaluation(tmp_path / "test")
    assert attacks["kind"] == "snn" and attacks["ensemble"][0] == "model" and len(attacks["ensemble"]) == 20
    paths = attacks["budget"]["snn_paths"]
    assert "assg(" in paths and "hart(" in paths and "pdsg" in paths and "(A and gamma: " in paths
    assert energy["native"] and energy["input_layers"] == ["fc1"] and energy["num_steps"] == 8
    # brute force: every spike of lif1 reaches fc2's 10 outputs; fc1 sees the image at every one of the 8 steps
    assert energy["synops_by_layer"]["fc2"]["synops"] == pytest.approx(10 * energy["layers"]["lif1"]["spikes"])
    assert energy["first_layer_macs"] == 64 * 128 * 8
    run_cli("train.py", "fit", "--config", CONFIG, "--model.init_args.weights", weights,
            *tiny_overrides(tmp_path / "fit"), "--trainer.callbacks", "[]")  # fmt: skip
    ckpt = next((tmp_path / "fit").rglob("last.ckpt"))
    run_cli("train.py", "test", "--config", CONFIG, "--ckpt_path", str(ckpt), *tiny_overrides(tmp_path / "again"),
            *quick)  # fmt: skip
    assert _evaluation(tmp_path / "again")[0]["num_samples"] == 12


def test_synops_equal_a_brute_force_count_at_borders_and_strides():
    torch.manual_seed(0)

    class ConvSNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.lif1 = snn.Leaky(beta=0.8)
            self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self.lif2 = snn.Leaky(beta=0.8)
            self.fc = nn.Linear(6 * 4 * 4, 3)
            self.lif3 = snn.Leaky(beta=0.8)

        def forward(self, x):
            m1, m2, m3, out = self.lif1.reset_mem(), self.lif2.reset_mem(), self.lif3.reset_mem(), []
            for _ in range(3):
                s1, m1 = self.lif1(self.conv1(x), m1)
                s2, m2 = self.lif2(self.conv2(s1), m2)
                s3, m3 = self.lif3(self.fc(s2.flatten(1)), m3)
                out.append(s3)
            return torch.stack(out)

    net = ConvSNN()
    with torch.no_grad():
        net.conv2.weight[:, :, 0, 0] = 0  # pruned synapses cost nothing
        net.conv1.weight.mul_(4)
    spikes = {}

    def keep(name):
        return lambda m, i, o: spikes.setdefault(name, []).append(o[0].detach())

    x = torch.rand(5, 1, 8, 8)
    hooks = [getattr(net, n).register_forward_hook(keep(n)) for n in ("lif1", "lif2")]
    with SynopCounter(net) as c:
        NativeNet(net)(x)
    for h in hooks:
        h.remove()
    c.samples = len(x)
    s = c.summary()

    def brute(layer, inputs):  # each spike: the outputs its non-zero weights reach, found one input at a time
        total, shape = 0.0, inputs[0].shape[1:]
        for idx in range(shape.numel()):
            one = torch.zeros(1, shape.numel())
            one[0, idx] = 1
            w = (layer.weight != 0).float()
            out = (torch.nn.functional.conv2d(one.view(1, *shape), w, None, layer.stride, layer.padding)
                   if isinstance(layer, nn.Conv2d) else torch.nn.functional.linear(one, w))  # fmt: skip
            fan = float(out.sum())
            total += sum(float(t.flatten(1)[:, idx].sum()) for t in inputs) * fan
        return total / len(x)

    assert s["synops_by_layer"]["conv2"]["synops"] == pytest.approx(brute(net.conv2, spikes["lif1"]))
    flat = [t.flatten(1) for t in spikes["lif2"]]
    assert s["synops_by_layer"]["fc"]["synops"] == pytest.approx(brute(net.fc, flat))
    assert s["input_layers"] == ["conv1"] and s["layers"]["lif1"]["spikes"] > 0


class _Net(nn.Module):
    def __init__(self, neuron: nn.Module, out_features: int = 3):
        super().__init__()
        self.fc1, self.neuron, self.fc2 = nn.Linear(4, 5), neuron, nn.Linear(5, out_features)
        self.out = snn.Leaky(beta=0.9, threshold=2.0, spike_grad=surrogate.atan())

    def forward(self, x):
        reset_states(self)
        rec = []
        for _ in range(3):
            s = self.neuron(self.fc1(x) * 3)
            s = s[0] if isinstance(s, tuple) else s
            rec.append(self.out(self.fc2(s))[0])
        return torch.stack(rec)


NEURONS = {
    "Leaky": lambda: snn.Leaky(beta=0.9, init_hidden=True),
    "Synaptic": lambda: snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
    "Alpha": lambda: snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
    "Lapicque": lambda: snn.Lapicque(beta=0.9, init_hidden=True),
    "RLeaky": lambda: snn.RLeaky(beta=0.9, linear_features=5, init_hidden=True),
    "RSynaptic": lambda: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=5, init_hidden=True),
}


@pytest.mark.parametrize("kind", NEURONS)
def test_every_snntorch_neuron_is_found_reset_and_attacked_through_each_path(kind):
    torch.manual_seed(0)
    net = NativeNet(_Net(NEURONS[kind]()))
    found = dict(spiking_neurons(net))
    assert type(found["net.neuron"]).__name__ == kind and describe(found["net.out"])["threshold"] == 2.0
    x = torch.rand(6, 4)
    plain = net(x)
    assert torch.equal(net(x), plain)  # the state is reset before every input
    for mode, sg, param in (("spike", {"name": "triangular", "gamma": 1.0}, None), ("assg", None, 0.425)):
        xi = x.clone().requires_grad_()
        with gradient_path(net, mode, sg, param):
            out = net(xi)
            out.logsumexp(1).sum().backward()
        reset_path_state(net)
        assert torch.equal(out.detach(), plain)  # a gradient path changes the backward only
        assert xi.grad.abs().sum() > 0, (kind, mode)
    assert found["net.out"].spike_grad.__class__.__name__ != "ScaledSurrogate"  # restored after the block


def test_surrogates_are_scaled_to_the_threshold():
    leaky = snn.Leaky(beta=0.5, threshold=2.0)
    net = nn.Sequential(leaky)
    v = torch.tensor([1.5, 2.5, 4.5], requires_grad=True)
    with gradient_path(net, "spike", {"name": "triangular", "gamma": 1.0}):
        leaky.spike_grad(v - 2.0).sum().backward()
    # g(x / theta) / theta with g the unit triangle: x = -0.5, 0.5, 2.5 -> (1 - 0.25) / 2, (1 - 0.25) / 2, 0
    assert v.grad.tolist() == pytest.approx([0.375, 0.375, 0.0])


def test_bad_input_gets_one_clear_error_each(weights, tmp_path):
    base = ["test", "--config", CONFIG, *tiny_overrides(tmp_path)]
    run_cli("train.py", "fit", "--config", CONFIG, "--model.init_args.weights", weights,
            *tiny_overrides(tmp_path / "fit"), "--trainer.callbacks", "[]")  # fmt: skip
    ckpt = str(next((tmp_path / "fit").rglob("last.ckpt")))
    cases = {
        "is a Lightning checkpoint of a whole run": ["--model.init_args.weights", ckpt],
        "pass --model.init_args.weights": ["--ckpt_path", weights],
        "does not fit TutorialSNN (fc1.weight": ["--model.init_args.weights", weights,
                                              "--model.init_args.net.init_args.num_hidden", "64"],
        "no time dimension": ["--model.init_args.readout", "spike_count",
                              "--model.init_args.net.class_path", "tests.test_native_snn.LogitsOnly"],
    }  # fmt: skip
    for expected, extra in cases.items():
        out = run_main(*base, *extra)
        lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
        assert out.returncode == 2 and len(lines) == 1 and expected in lines[0], (expected, out.stderr[-800:])


class LogitsOnly(nn.Module):
    """A net that returns the last step's membrane as logits: no time dimension."""

    def __init__(self, num_steps: int = 8, num_hidden: int = 128):
        super().__init__()
        self.fc1, self.lif1, self.fc2 = nn.Linear(64, num_hidden), snn.Leaky(beta=0.9), nn.Linear(num_hidden, 10)

    def forward(self, x):
        mem = self.lif1.reset_mem()
        spk, mem = self.lif1(self.fc1(x.flatten(1)), mem)
        return self.fc2(spk)


def test_an_snn_is_never_run_or_counted_as_an_ann():
    from lightning_modules import RobustANN

    with pytest.raises(UserError, match="it is an SNN.*NativeSNN"):
        RobustANN(_Net(snn.Leaky(beta=0.9, init_hidden=True)))
    with pytest.raises(UserError, match="SLSTM is a spiking neuron this repo cannot attack"):
        spiking_neurons(nn.Sequential(snn.SLSTM(4, 3)))


@pytest.mark.parametrize("saved", ["torch_prune", "zeros"])
def test_a_pruned_net_keeps_its_pruned_weights_at_zero_through_fine_tuning(weights, tmp_path, saved):
    """A net pruned with torch.nn.utils.prune (weight_orig / weight_mask in its state dict), or saved dense with zeros
    and ``mask_zeros``: the mask is frozen, so adversarial fine-tuning never regrows a pruned weight."""
    import sys

    from torch.nn.utils import prune

    sys.path.insert(0, str(ROOT))
    from examples.tutorial_snn import TutorialSNN

    net = TutorialSNN()
    net.load_state_dict(torch.load(weights, weights_only=True))
    prune.l1_unstructured(net.fc1, "weight", amount=0.7)
    mask = net.fc1.weight_mask.clone()
    if saved == "zeros":
        prune.remove(net.fc1, "weight")  # a plain dense state dict whose pruned weights are 0
    path = tmp_path / "pruned.pt"
    torch.save(net.state_dict(), path)
    before = net.fc1.weight.detach().clone()
    more = ["--model.init_args.mask_zeros", "true"] if saved == "zeros" else []
    run_cli("train.py", "fit", "--config", CONFIG, "--model.init_args.weights", str(path), *more,
            *tiny_overrides(tmp_path / "fit"), "--trainer.callbacks", "[]")  # fmt: skip
    sd = torch.load(next((tmp_path / "fit").rglob("last.ckpt")), weights_only=False)["state_dict"]
    base = "snn_model.net.fc1.parametrizations.weight."
    after = sd[base + "original"] * sd[base + "0.mask"]
    assert torch.equal(sd[base + "0.mask"], mask)  # the mask carried over, unchanged
    assert (after[mask == 0] == 0).all() and not torch.equal(after, before)  # trained, pruned weights still 0


def test_pdsg_gradient_equals_an_unrolled_reference():
    """PDSG (Lun et al., CVPR 2025) through snnTorch's Leaky: dS/du = N(u - theta; sigma/2, sigma), sigma the std of
    the membrane over the steps so far of each sample and feature (theta while there is one value), one value per step
    (the detached reset does not count), checked against the membrane recurrence unrolled by hand."""
    import math

    torch.manual_seed(0)
    theta, beta, T = 0.5, 0.9, 4

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(3, 4), snn.Leaky(beta=beta, threshold=theta)

        def forward(self, x):
            mem, out = self.lif.init_leaky(), []
            for _ in range(T):
                spk, mem = self.lif(self.fc(x), mem)
                out.append(spk)
            return torch.stack(out)

    class Gauss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, sigma):
            ctx.save_for_backward(v, sigma)
            return (v > 0).float()

        @staticmethod
        def backward(ctx, g):
            v, s = ctx.saved_tensors
            return g * torch.exp(-((v - s / 2) ** 2) / (2 * s**2)) / (math.sqrt(2 * math.pi) * s), None

    net, weight = Net(), torch.randn(T, 1, 4)
    x = (2 * torch.rand(5, 3)).requires_grad_()
    reset_states(net)
    with gradient_path(net, "pdsg"):
        ours = torch.autograd.grad((net(x) * weight).sum(), x)[0]
    assert net.lif.spike_grad is not None and "mem_reset" not in vars(net.lif)  # restored after the block
    cur, mem, hist, loss = net.fc(x), torch.zeros(5, 4), [], 0
    for t in range(T):
        mem = beta * mem + cur - (mem - theta > 0).float() * theta
        hist.append((mem - theta).detach())
        sigma = torch.stack(hist).std(0) if t else torch.zeros(5, 4)
        loss = (
            loss
            + (Gauss.apply(mem - theta, torch.where(sigma > 0, sigma, torch.full_like(sigma, theta))) * weight[t]).sum()
        )
    assert torch.allclose(ours, torch.autograd.grad(loss, x)[0], atol=1e-6) and ours.abs().sum() > 0


class _RateCoded(nn.Module):
    """A net that draws its own input spikes (rate coding inside its forward), as snnTorch's tutorials do."""

    def __init__(self):
        super().__init__()
        self.fc, self.lif = nn.Linear(64, 10), snn.Leaky(beta=0.9)

    def forward(self, x):
        from snntorch import spikegen

        mem, out = self.lif.init_leaky(), []
        for step in spikegen.rate(x.flatten(1), num_steps=6):
            spk, mem = self.lif(self.fc(step), mem)
            out.append(spk)
        return torch.stack(out)


def test_a_net_that_draws_its_own_input_spikes_is_averaged_over_draws_or_refused():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(UserError, match="set model.init_args.eot: 16"):
        NativeNet(_RateCoded()).eval()(x)  # one random draw: an attack on it would overestimate robustness
    net = _RateCoded()
    model = NativeNet(net, eot=5).eval()
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    draws = [NativeNet(net).train()(x) for _ in range(5)]  # train mode: no check, one draw each
    assert torch.allclose(out, torch.stack(draws).mean(0))  # the expectation over 5 draws
    assert NativeNet(net, eot=1).train()(x).shape == (8, 10)  # training: BPTT through one draw, as usual
    with pytest.raises(UserError, match="eot must be a positive integer"):
        NativeNet(net, eot=0)


def test_hart_gradient_equals_a_reference_with_the_whole_sequence_at_once():
    """HART (Hao et al., ICLR 2024) through NativeNet: a per-step snnTorch net, its backward run neuron by neuron,
    against the reference's formulation (each layer's T inputs at once, GradAvg on them, a detached membrane
    history, the triangle of width gamma * theta)."""
    torch.manual_seed(0)
    T, gamma, betas, thetas = 4, 0.7, (0.9, 0.8), (0.5, 1.0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)
            self.lif2 = snn.Leaky(beta=betas[1], threshold=thetas[1])  # defined first, called second
            self.lif1 = snn.Leaky(beta=betas[0], threshold=thetas[0])

        def forward(self, x):
            m1, m2, out = self.lif1.init_leaky(), self.lif2.init_leaky(), []
            for _ in range(T):
                s1, m1 = self.lif1(self.fc1(x.flatten(1)), m1)
                s2, m2 = self.lif2(self.fc2(s1), m2)
                out.append(s2)
            return torch.stack(out)

    class GradAvg(torch.autograd.Function):
        @staticmethod
        def forward(ctx, seq):
            return seq.clone()

        @staticmethod
        def backward(ctx, g):
            return g.mean(0, keepdim=True).expand_as(g)

    class Zif(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, w):
            ctx.save_for_backward(v)
            ctx.w = w
            return (v > 0).float()

        @staticmethod
        def backward(ctx, g):
            (v,) = ctx.saved_tensors
            return g * (ctx.w - v.abs()).clamp(min=0) / ctx.w**2, None

    def layer(seq, beta, theta):  # seq [T, B, F]: GradAvg, then the loop over a detached history
        seq, mem, out = GradAvg.apply(seq), torch.zeros_like(seq[0]), []
        for t in range(T):
            mem = beta * mem.detach() + seq[t] - (mem.detach() - theta > 0).float() * theta
            out.append(Zif.apply(mem - theta, gamma * theta))
        return torch.stack(out)

    net = Net()
    x = 3 * torch.rand(7, 6)
    weight = torch.randn(7, 3)
    model = NativeNet(net)
    xa = x.clone().requires_grad_()
    with gradient_path(model, "hart", None, gamma):
        logits = model(xa)
        ours = torch.autograd.grad((logits * weight).sum(), xa)[0]
    assert model.path_forward is None and torch.equal(logits, model(x))  # the deployed forward; path off after
    xr = x.clone().requires_grad_()
    s1 = layer(net.fc1(xr).expand(T, -1, -1), betas[0], thetas[0])
    s2 = layer(net.fc2(s1), betas[1], thetas[1])
    ref = torch.autograd.grad((s2.sum(0) * weight).sum(), xr)[0]
    assert ours.abs().sum() > 0 and torch.allclose(ours, ref, atol=1e-6)


class _TwoLeaky(nn.Module):
    """6 -> 8 -> 3 through two snnTorch Leaky layers, looped over T steps; the output spikes [T, B, 3]."""

    def __init__(self, T: int, beta: float, theta: float):
        super().__init__()
        self.T, self.fc1, self.fc2 = T, nn.Linear(6, 8), nn.Linear(8, 3)
        self.lif1, self.lif2 = snn.Leaky(beta=beta, threshold=theta), snn.Leaky(beta=beta, threshold=theta)

    def forward(self, x):
        m1, m2, out = self.lif1.init_leaky(), self.lif2.init_leaky(), []
        for _ in range(self.T):
            s1, m1 = self.lif1(self.fc1(x), m1)
            s2, m2 = self.lif2(self.fc2(s1), m2)
            out.append(s2)
        return torch.stack(out)


def _leaky_spikes(seq: torch.Tensor, beta: float, theta: float) -> torch.Tensor:
    """The reference's forward over a whole sequence [T, B, F]: snnTorch's Leaky with its subtractive reset."""
    mem, out = torch.zeros_like(seq[0]), []
    for t in range(len(seq)):
        mem = beta * mem + seq[t] - (mem - theta > 0).float() * theta
        out.append((mem - theta > 0).float())
    return torch.stack(out)


def _path_vs_reference(mode: str, reference, seed: int, beta: float, theta: float, T: int = 5) -> None:
    """The input gradient through ``mode`` equals the one through ``reference`` (an autograd function over each
    layer's whole input sequence) on a two-layer Leaky net."""
    torch.manual_seed(seed)
    net, x, weight = _TwoLeaky(T, beta, theta), 2 * torch.rand(9, 6), torch.randn(9, 3)
    model = NativeNet(net)
    xa = x.clone().requires_grad_()
    with gradient_path(model, mode):
        ours = torch.autograd.grad((model(xa) * weight).sum(), xa)[0]
    assert not any(m._forward_pre_hooks for m in (net.lif1, net.lif2))  # the path's hooks removed after the block
    xr = x.clone().requires_grad_()
    s2 = reference.apply(net.fc2(reference.apply(net.fc1(xr).expand(T, -1, -1))))
    ref = torch.autograd.grad((s2.sum(0) * weight).sum(), xr)[0]
    assert ours.abs().sum() > 0 and torch.allclose(ours, ref, atol=1e-6)


def test_bptr_gradient_equals_the_reference_straight_through_where_a_neuron_fired():
    """BPTR (the reference's RateBp2) through snnTorch's Leaky: a detached membrane history and dS_t/dx_t =
    1[the neuron fired at any step], against the whole-sequence formulation."""
    beta, theta = 0.9, 0.6

    class RateBp2(torch.autograd.Function):
        @staticmethod
        def forward(ctx, seq):
            out = _leaky_spikes(seq, beta, theta)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * (out.sum(0, keepdim=True) > 0).float()

    _path_vs_reference("bptr", RateBp2, 1, beta, theta)


def test_rga_gradient_equals_the_reference_rate_gradient_of_the_mean_input():
    """RGA (the reference's RateBp) through snnTorch's Leaky: dS_t/dx_t = g(mean_t x_t / theta) / theta with the
    leak tau = beta, against the whole-sequence formulation."""
    beta, theta = 0.7, 0.5

    class RateBp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, seq):
            ctx.save_for_backward(seq)
            return _leaky_spikes(seq, beta, theta)

        @staticmethod
        def backward(ctx, g):
            (seq,) = ctx.saved_tensors
            m = seq.mean(0, keepdim=True) / theta
            rate = ((m >= 1 - beta) & (m <= 2)).float() * (0.8 + 0.2 * beta) / (beta + 1)
            return g * (rate + ((m >= 0) & (m < 1 - beta)).float() * 0.2) / theta

    _path_vs_reference("rga", RateBp, 2, beta, theta)
