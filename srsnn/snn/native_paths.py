"""Gradient paths over the snnTorch neurons of an SNN you built (``srsnn.snn.native``).

An snnTorch neuron fires through ``spike_grad(mem - threshold)`` (forward: the step ``1[x > 0]``; ``mem_reset``
calls it too and detaches the result), so a gradient path is a swap of each neuron's ``spike_grad`` for the length
of an attack (with a hook on its calls where the path detaches the membrane history), over the same weights and the
same forward:

* ``spike``: a surrogate of ``srsnn.snn.surrogates`` scaled to the neuron's threshold theta,
  ``dS/dx = g(x / theta) / theta`` (the paper ensemble's shapes keep their meaning at any threshold);
* ``assg``: the adaptive-sharpness arctan surrogate of Wang et al. (arXiv 2512.22522), per neuron element and call
  (a call = one time step: ``fire``, or ``mem_reset`` whose result is detached), running means
  M <- 0.9 M + 0.1 |x| and D <- 0.9 D + 0.1 ||x| - M| kept across one attack start's iterations (M starts at theta),
  g(x) = (a / 2) / (1 + (pi a x / 2)^2), a = omega / (M + 1.5 D), omega = 2 tan(pi A) / pi.
* ``pdsg``: the potential-dependent surrogate of Lun et al. (CVPR 2025), a Gaussian g(x) = N(x; sigma / 2, sigma)
  whose width sigma is the standard deviation of the membrane over this forward's time steps so far, per sample and
  channel (conv) or feature (linear); no hyperparameter. The paper pools the batch as well, which makes a sample's
  gradient depend on its batch; per sample is the paper's batch-1 case and keeps the per-sample records identical on
  any number of processes. sigma = 0 (a single value) is taken as theta.
* ``hart``: HART (Hao et al., ICLR 2024) through ``NativeNet``: a detached membrane history (every state argument
  of a neuron call detached), the triangle g(x) = max(0, w - |x|) / w^2 with w = gamma * theta, and every step's
  input gradient replaced by the mean over the T steps of dL/ds_t g(u_t - theta). The mean needs every step's
  gradient before any is passed on, which a per-step backward cannot do: ``_Hart`` cuts the graph at every neuron
  call (its input a leaf) and runs the backward neuron by neuron, last first (``hart_backward``).
* ``rga``: RGA (the reference's ``RateBp``): a detached membrane history and dS_t/dx_t = g(x_bar) at every step,
  x_bar the neuron's mean input over the forward's steps (in threshold units) and, with tau the neuron's leak
  (``beta``; 1 without one), g = (1 - 0.2 + 0.2 tau) / (tau + 1) on [1 - tau, 2], 0.2 on [0, 1 - tau), else 0
  (divided by theta): for an IF neuron 1 / (2 theta) on [0, 2 theta];
* ``bptr``: BPTR (the reference's ``RateBp2``): a detached membrane history and dS_t/dx_t = 1[the neuron fired at
  some step of this forward], a straight-through pass wherever it fired at all (the record is complete when the
  backward runs).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator, Optional

import torch
from torch import nn

from srsnn.errors import UserError
from srsnn.snn.native import NativeNet, spiking_neurons
from srsnn.snn.neurons import ASSG_A, HART_GAMMA, RunningSharpness, atan_derivative
from srsnn.snn.surrogates import Surrogate, Triangular, make_surrogate

NATIVE_MODES = ("spike", "assg", "pdsg", "hart", "bptr", "rga")
ONE_CALL_PER_STEP = ("pdsg", "bptr", "rga")  # paths that record per step: mem_reset must not call spike_grad


class _Step(torch.autograd.Function):
    """Forward ``1[x > 0]`` (snnTorch's); backward ``grad * derivative(x)``."""

    @staticmethod
    def forward(ctx, x, derivative):
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x), None


def _theta(neuron: nn.Module) -> float:
    return max(float(torch.as_tensor(neuron.threshold).detach().abs().mean()), 1e-6)


class ScaledSurrogate:
    """``spike_grad`` with ``surrogate`` scaled to the neuron's threshold: ``dS/dx = g(x / theta) / theta``."""

    def __init__(self, surrogate: Surrogate, neuron: nn.Module):
        self.surrogate, self.neuron = surrogate, neuron

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        theta = _theta(self.neuron)
        return _Step.apply(x, lambda v: self.surrogate.derivative(v / theta) / theta)


class AdaptiveAtanSpike:
    """ASSG's ``spike_grad`` for one neuron; a call = one time step (``RunningSharpness``, as the IF neuron's)."""

    def __init__(self, a: float, neuron: nn.Module):
        self.sharpness, self.neuron, self.calls = RunningSharpness(a), neuron, 0

    def new_forward(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k, self.calls = self.calls, self.calls + 1
        a = self.sharpness.alpha(x.detach().abs(), k, _theta(self.neuron))
        return _Step.apply(x, lambda v: atan_derivative(a, v))


class PDSGSpike:
    """PDSG's ``spike_grad`` for one neuron (see the module docstring); ``history``: the membrane (minus theta) at
    each step of the current forward. Only ``fire`` calls it while the path is on (``_heaviside_reset``)."""

    def __init__(self, neuron: nn.Module):
        self.neuron, self.history = neuron, []

    def new_forward(self) -> None:
        self.history = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.history and self.history[-1].shape != x.shape:
                self.history = []
            self.history.append(x.detach())
            h = torch.stack(self.history)  # [t, B, C, ...]: over time and every dim after the channel
            dims = (0, *range(3, h.dim()))
            if h.shape[0] * math.prod(h.shape[3:]) > 1:
                sigma = h.std(dim=dims, keepdim=True).squeeze(0)
            else:
                sigma = torch.zeros_like(x)
            sigma = torch.where(sigma > 0, sigma, torch.full_like(sigma, _theta(self.neuron)))
        mu, norm = sigma / 2, math.sqrt(2 * math.pi) * sigma
        return _Step.apply(x, lambda v: torch.exp(-((v - mu) ** 2) / (2 * sigma**2)) / norm)


def _heaviside_reset(neuron: nn.Module, mem: torch.Tensor) -> torch.Tensor:
    """snnTorch's ``mem_reset`` (a detached ``1[mem > theta]``) without calling ``spike_grad``, so that a stateful path
    sees one call per time step."""
    return (mem - neuron.threshold > 0).to(mem.dtype).detach()


@contextlib.contextmanager
def native_gradient_path(
    net: nn.Module, mode: str = "spike", surrogate=None, param: Optional[float] = None
) -> Iterator[None]:
    """Every snnTorch neuron of ``net`` fires through the path's ``spike_grad`` inside the block (restored after)."""
    if mode not in NATIVE_MODES:
        raise UserError(f"gradient path {mode!r} is not defined for snnTorch neurons (defined: {NATIVE_MODES})")
    neurons = [m for _, m in spiking_neurons(net)]
    saved = [m.spike_grad for m in neurons]
    sg = make_surrogate(surrogate) if surrogate is not None else None
    if mode == "hart" and not isinstance(net, NativeNet):
        raise UserError("the hart path runs through srsnn.snn.native.NativeNet (wrap the network in it)")
    hooks = []
    try:
        if mode == "hart":
            net.path_forward = lambda x: _Hart.apply(x, net)
        for m in neurons:
            if mode == "assg":
                m.spike_grad = AdaptiveAtanSpike(ASSG_A if param is None else float(param), m)
            elif mode == "pdsg":
                m.spike_grad = PDSGSpike(m)
            elif mode == "hart":
                m.spike_grad = ScaledSurrogate(Triangular(HART_GAMMA if param is None else float(param)), m)
            elif mode == "rga":
                m.spike_grad = _RateGrad(m)
                hooks.append(m.register_forward_pre_hook(_RateGrad.record, with_kwargs=True))
            elif mode == "bptr":
                m.spike_grad = _Fired()
                hooks.append(m.register_forward_pre_hook(_detached_history, with_kwargs=True))
            elif sg is not None:
                m.spike_grad = ScaledSurrogate(sg, m)
            if mode in ONE_CALL_PER_STEP:
                m.mem_reset = functools.partial(_heaviside_reset, m)
        yield
    finally:
        for h in hooks:
            h.remove()
        if isinstance(net, NativeNet):
            net.path_forward = None
        for m, g in zip(neurons, saved):
            m.spike_grad = g
            m.__dict__.pop("mem_reset", None)  # the class's own again


def _detached_history(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A neuron call's state (every argument after the input, or the state it keeps itself) detached: no gradient
    flows through the membrane chain to earlier steps."""
    for name in ("mem", "syn", "spk"):  # a neuron that keeps its state itself (init_hidden)
        if torch.is_tensor(getattr(module, name, None)):
            setattr(module, name, getattr(module, name).detach())
    detach = lambda v: v.detach() if torch.is_tensor(v) else v
    return (args[0], *map(detach, args[1:])), {k: detach(v) for k, v in kwargs.items()}


class _Fired:
    """BPTR's ``spike_grad``: the step, its derivative 1[fired at some step of this forward] (read at backward)."""

    def __init__(self):
        self.new_forward()

    def new_forward(self) -> None:
        # a new record (the backward of an earlier forward keeps its own), reduced once, at the first backward step
        self.spikes = []
        self.fired = functools.cache(lambda spikes=self.spikes: torch.stack(spikes).any(0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.spikes.append((x > 0).detach())
        fired = self.fired
        return _Step.apply(x, lambda v: fired().to(v.dtype))


class _RateGrad:
    """RGA's ``spike_grad`` (module docstring); ``inputs``: the neuron's inputs of this forward, read at backward."""

    def __init__(self, neuron: nn.Module):
        self.neuron = neuron
        beta = getattr(neuron, "beta", None)
        self.tau = float(torch.as_tensor(beta).detach().clamp(0, 1).mean()) if beta is not None else 1.0
        self.new_forward()

    def new_forward(self) -> None:
        # a new record, its mean taken once, at the first backward step (every step's input is recorded by then)
        self.inputs = []
        self.mean_input = functools.cache(lambda inputs=self.inputs: torch.stack(inputs).mean(0))

    @staticmethod
    def record(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        module.spike_grad.inputs.append(args[0].detach())
        return _detached_history(module, args, kwargs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean_input, theta, tau = self.mean_input, _theta(self.neuron), self.tau

        def g(v: torch.Tensor) -> torch.Tensor:
            xbar = mean_input() / theta
            high = ((xbar >= 1 - tau) & (xbar <= 2)).to(v.dtype) * (1 - 0.2 + 0.2 * tau) / (tau + 1)
            return (high + ((xbar >= 0) & (xbar < 1 - tau)).to(v.dtype) * 0.2) / theta

        return _Step.apply(x, g)


class _Hart(torch.autograd.Function):
    """``NativeNet``'s output with HART's gradient (module docstring): the forward is the deployed one."""

    @staticmethod
    def forward(ctx, x, model):
        with torch.enable_grad():
            ctx.x = x.detach().requires_grad_()
            ctx.calls, order = [], {}

            def cut(module, args, kwargs):  # the call's input a leaf (recorded), its history detached
                leaf = args[0].detach().requires_grad_()
                ctx.calls.append((order.setdefault(id(module), len(order)), args[0], leaf))  # order of first call
                args, kwargs = _detached_history(module, args, kwargs)
                return (leaf, *args[1:]), kwargs

            hooks = [m.register_forward_pre_hook(cut, with_kwargs=True) for m in model._neurons]
            try:
                ctx.out = model._once(ctx.x)
            finally:
                for h in hooks:
                    h.remove()
        return ctx.out.detach()

    @staticmethod
    def backward(ctx, grad):
        with torch.enable_grad():
            return hart_backward(ctx.out, grad, ctx.x, ctx.calls), None


def hart_backward(out, grad, x, calls) -> torch.Tensor:
    """dL/dx under HART. ``calls``: every neuron call as (the neuron's place in call order, its input as computed,
    the leaf the neuron ran on). Each neuron's leaves get the direct gradient (through its spikes and membranes to
    the output) plus what later neurons pass down; their mean over the neuron's calls is the gradient of each
    call's input, carried down to the earlier leaves and the image."""
    leaves = [leaf for _, _, leaf in calls]
    zero = lambda t, g: torch.zeros_like(t) if g is None else g
    direct = torch.autograd.grad(out, leaves + [x], grad, allow_unused=True, retain_graph=True)
    g = [zero(leaf, d) for leaf, d in zip(leaves, direct)]
    gx = zero(x, direct[-1])
    for n in sorted({k for k, _, _ in calls}, reverse=True):
        mine = [i for i, (k, _, _) in enumerate(calls) if k == n]
        mean = torch.stack([g[i] for i in mine]).mean(0)
        below = [i for i, (k, _, _) in enumerate(calls) if k < n]
        got = torch.autograd.grad(
            [calls[i][1] for i in mine],
            [leaves[i] for i in below] + [x],
            [mean] * len(mine),
            allow_unused=True,
            retain_graph=True,
        )
        for i, d in zip(below, got):
            if d is not None:
                g[i] = g[i] + d
        if got[-1] is not None:
            gx = gx + got[-1]
    return gx


def reset_native_path_state(net: nn.Module) -> None:
    """A new attack start: ASSG's running means begin afresh."""
    for _, m in spiking_neurons(net):
        if isinstance(m.spike_grad, AdaptiveAtanSpike):
            m.spike_grad.sharpness.reset()
            m.spike_grad.calls = 0
