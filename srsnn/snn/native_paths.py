"""Gradient paths (``srsnn.snn.gradients``) over the snnTorch neurons of an SNN you built (``srsnn.snn.native``).

An snnTorch neuron fires through ``spike_grad(mem - threshold)`` (forward: the step ``1[x > 0]``; ``mem_reset``
calls it too and detaches the result), so a path is a swap of each neuron's ``spike_grad`` for ``PathSpike`` for the
length of an attack, over the same weights and the same forward; a forward pre-hook hands the path each step's input
and detaches the membrane history where the path cuts it. Surrogates are scaled to the neuron's threshold theta,
``g(x / theta) / theta`` (the paper ensemble's shapes keep their meaning at any threshold).

HART's mean over the T steps needs every step's gradient before any is passed on, which a per-step backward cannot
do: ``_Hart`` cuts the graph at every neuron call of a ``NativeNet`` (its input a leaf, its history detached) and
runs the backward neuron by neuron, last first (``hart_backward``).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Optional

import torch
from torch import nn

from srsnn.errors import UserError
from srsnn.snn.gradients import PATHS, Path, make_path
from srsnn.snn.native import NativeNet, spiking_neurons
from srsnn.snn.steps import mean_over_steps

NATIVE_MODES = ("spike", *PATHS)


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


class PathSpike:
    """A neuron's ``spike_grad`` on a path of ``srsnn.snn.gradients``: each call is one step (``fire``, or
    ``mem_reset`` whose result is detached, unless the path is ``per_step``); ``input``: the neuron's input at this
    call (set by its forward pre-hook, for paths that read it)."""

    def __init__(self, path: Path, neuron: nn.Module):
        self.path, self.neuron, self.calls, self.input = path, neuron, 0, None

    def new_forward(self) -> None:
        self.calls = 0
        self.path.new_forward()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t, self.calls = self.calls, self.calls + 1
        with torch.no_grad():
            local = self.path.local(t, x.detach(), self.input, x > 0, _theta(self.neuron))
        return _Step.apply(x, local)


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
    net = next((m for m in net.modules() if isinstance(m, NativeNet)), net)  # the runner under any wrapper
    if mode == "hart" and not isinstance(net, NativeNet):
        raise UserError("the hart path runs through srsnn.snn.native.NativeNet (wrap the network in it)")
    hooks = []
    try:
        if mode == "hart":
            net.path_forward = lambda x: _Hart.apply(x, net)
        for m in neurons:
            if mode == "spike" and surrogate is None:
                continue  # the neuron's own surrogate
            m.spike_grad = PathSpike(make_path(mode, surrogate, param, scaled=True, tau=_leak(m)), m)
            if m.spike_grad.path.per_step:  # its reset must not call spike_grad; the hook records the input
                m.mem_reset = functools.partial(_heaviside_reset, m)
                hooks.append(m.register_forward_pre_hook(_record_input, with_kwargs=True))
        yield
    finally:
        for h in hooks:
            h.remove()
        if isinstance(net, NativeNet):
            net.path_forward = None
        for m, g in zip(neurons, saved):
            m.spike_grad = g
            m.__dict__.pop("mem_reset", None)  # the class's own again


def _leak(neuron: nn.Module) -> float:
    """tau, the neuron's leak (``beta``; 1 without one), for RGA."""
    beta = getattr(neuron, "beta", None)
    return float(torch.as_tensor(beta).detach().clamp(0, 1).mean()) if beta is not None else 1.0


def _record_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A step's input for the path to read, and, for a path that cuts it, the membrane history detached."""
    module.spike_grad.input = args[0].detach()
    return _detached_history(module, args, kwargs) if module.spike_grad.path.detach_history else (args, kwargs)


def _detached_history(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A neuron call's state (every argument after the input, or the state it keeps itself) detached: no gradient
    flows through the membrane chain to earlier steps."""
    for name in ("mem", "syn", "spk"):  # a neuron that keeps its state itself (init_hidden)
        if torch.is_tensor(getattr(module, name, None)):
            setattr(module, name, getattr(module, name).detach())
    detach = lambda v: v.detach() if torch.is_tensor(v) else v
    return (args[0], *map(detach, args[1:])), {k: detach(v) for k, v in kwargs.items()}


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
        mean = mean_over_steps(g[i] for i in mine)
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
        if isinstance(m.spike_grad, PathSpike):
            m.spike_grad.path.start()
            m.spike_grad.calls = 0
