"""The integrate-and-fire neuron of the converted SNN, built on ``snntorch.Leaky`` with beta = 1.

Per time step t (non-leaky IF, tau = 1; paper: Schmolli et al., CPAL 2025, Stage 2):

    u_t = v_{t-1} + x_t,  v_0 = v_init * theta    integrate (no leak; v_init = 0 in the paper)
    s_t = H(u_t - theta),  theta = max(V_th, 0.03)   fire when v >= V_th
    v_t = u_t * (1 - s_t)        hard reset to zero (paper)
    v_t = u_t - s_t * theta      reset by subtraction (option)

``V_th`` is a trainable scalar per layer. By default the gradient flows through the reset, i.e. through
s_t in v_t (dv_t/ds_t = -u_t, or -theta), as in the reference code (IGITUGraz/RobustSNNConversion,
``models/layers.py``) for fine-tuning and attacks alike; ``detach_reset=True`` gives snnTorch's detached reset.

Gradient paths (``mode``), all over the *same* weights, as the evaluation ensemble needs them: ``"spike"`` (BPTT
with ``surrogate`` as dS/du, ``srsnn.snn.surrogates``), ``"relu"`` (the reference's ``Act`` path: the same network
with T = 0, every neuron a plain ReLU) and every path of ``srsnn.snn.gradients`` (``path``: ASSG, HART, PDSG, RGA,
BPTR), which the fused kernel applies step by step.

The layer receives all T steps at once as a ``[T*B, ...]`` tensor (stateless layers run once on the folded
batch) and runs the recurrence over T inside one autograd function, so BPTT adds one graph node per layer
instead of T. Under ``SpikingNetwork(schedule="time")`` it is called once per step instead, carrying the
membrane in ``state`` that the network resets at the start of its forward and clears at the end. Either way no
state survives a forward, so no ``snntorch.utils.reset`` (which resets every neuron in the process) is ever
needed, and ``deepcopy`` works.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Union, get_args

import snntorch
import torch
from snntorch._neurons.neurons import SpikingNeuron

from srsnn.snn.gradients import PATHS, Path, SurrogatePath
from srsnn.snn.surrogates import Surrogate, make_surrogate

MODES = ("spike", "relu", *PATHS)
Reset = Literal["zero", "subtract"]
RESETS = get_args(Reset)


def _if_forward(x: torch.Tensor, v0, theta: torch.Tensor, reset_zero: bool):
    """The IF recurrence without a graph, one time step's slice per pass (see ``_IFMultiStep``): the pre-reset
    membranes u_t and the spikes s_t, each [T, B, ...], and the final membrane v_T."""
    u_all, spikes, v = torch.empty_like(x), torch.empty_like(x), v0
    for t in range(x.shape[0]):
        u = u_all[t].copy_(x[t]) if v is None else torch.add(v, x[t], out=u_all[t])
        s = torch.ge(u, theta, out=spikes[t])
        # arithmetic, not torch.where/masked_fill: those measured ~6x slower on NHWC tensors on CPU
        v = torch.addcmul(u, u, s, value=-1.0) if reset_zero else torch.addcmul(u, s, theta, value=-1.0)
    return u_all, spikes, v


class _IFMultiStep(torch.autograd.Function):
    """Fused IF recurrence over T steps from an initial membrane ``v0`` (None = 0) with a gradient path's backward
    (``srsnn.snn.gradients``): one autograd node per call instead of T. Every pass works on one time step's slice, so
    the few elementwise ops of a step run on data still in cache (on a CPU, passes over the whole [T, B, ...] tensor
    are memory-bound and measured 3-4x slower per element). Saves the pre-reset membrane u and the spikes. Returns the
    spikes and the final membrane v_T (the state for a later call, when the network steps through time).

    Only the surrogate path (training's) lets the gradient through the reset (unless ``detach_reset``) and to theta;
    the attack paths detach the reset and leave theta alone."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, v0, theta: torch.Tensor, path: Path, reset_zero: bool, detach_reset: bool = False
    ):
        ctx.set_materialize_grads(False)
        u_all, spikes, v = _if_forward(x, v0, theta, reset_zero)
        ctx.save_for_backward(u_all, spikes, theta)  # the spikes are saved by the next layer anyway
        ctx.trains = isinstance(path, SurrogatePath)
        if ctx.trains:
            ctx.local = [path.local(0, None, None, None, theta)] * len(x)
        else:
            path.new_forward()
            ctx.local = [path.local(t, u_all[t] - theta, x[t], spikes[t], theta) for t in range(len(x))]
        ctx.path, ctx.reset_zero, ctx.has_v0 = path, reset_zero, v0 is not None
        ctx.reset_flows = ctx.trains and not detach_reset
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        u_all, spikes, theta = ctx.saved_tensors
        grad_x, detached = torch.empty_like(u_all), ctx.path.detach_history
        # an attack on frozen weights needs dL/dx only: skip two passes a step
        want_theta = ctx.needs_input_grad[2] and ctx.trains
        grad_theta = torch.zeros((), dtype=u_all.dtype, device=u_all.device) if want_theta else None
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(u_all)
        if detached or not ctx.trains:
            grad_v = None  # the attack paths' forward returns the spikes only
        for t in range(u_all.shape[0] - 1, -1, -1):
            grad_s = grad_spikes[t]
            if grad_v is not None and ctx.reset_flows:  # s_t also enters v_t: dv_t/ds_t = -u_t (zero) or -theta
                grad_s = grad_s - grad_v * (u_all[t] if ctx.reset_zero else theta)
            g_spike = ctx.local[t](u_all[t] - theta).mul_(grad_s)  # dL/ds_t * g(u_t - theta)
            if want_theta:
                grad_theta -= g_spike.sum()
            if grad_v is None:  # nothing flows back from v_t
                grad_x[t] = g_spike
            elif not ctx.trains:  # the reset detached: dv_t/du_t = 1 - s_t (zero reset) or 1
                grad_x[t] = g_spike + (grad_v * (1 - spikes[t]) if ctx.reset_zero else grad_v)
            else:  # dL/du_t = dL/ds_t g(u_t - theta) + dL/dv_t dv_t/du_t
                torch.add(g_spike, grad_v, out=grad_x[t])
                if ctx.reset_zero:  # v_t = u_t (1 - s_t): dv/du = 1 - s
                    grad_x[t].addcmul_(grad_v, spikes[t], value=-1.0)
                elif want_theta:  # v_t = u_t - s_t theta: dv/du = 1 (s_t fixed); the reset depends on theta
                    grad_theta -= (grad_v * spikes[t]).sum()
            if not detached:
                grad_v = grad_x[t]  # u_t = v_{t-1} + x_t: dL/dv_{t-1} = dL/du_t = dL/dx_t
        if ctx.path.mean_over_time:
            grad_x = grad_x.mean(0, keepdim=True).expand_as(u_all).clone()
        grad_theta = grad_theta.reshape(theta.shape) if want_theta else None
        return grad_x, grad_v if ctx.has_v0 else None, grad_theta, None, None, None


def untrack(neuron: torch.nn.Module) -> None:
    """Take a neuron off snnTorch's process-wide list (kept for ``utils.reset``, which this repo never uses: it would
    keep every network ever built alive)."""
    if neuron in SpikingNeuron.instances:
        SpikingNeuron.instances.remove(neuron)


class IFNeuron(snntorch.Leaky):
    """Non-leaky integrate-and-fire neuron (``snntorch.Leaky`` with beta = 1) run over all T steps at once.

    Args:
        threshold: initial V_th (replaced by calibration during conversion).
        reset: ``"zero"`` (hard reset, paper) or ``"subtract"``.
        surrogate: name or ``{"name": ..., **params}`` of a surrogate in ``srsnn.snn.surrogates``.
        min_threshold: V_th is clamped to at least this value (paper: 0.03).
        detach_reset: stop the gradient through the reset (snnTorch's choice); default: it flows (reference code).
        v_init: initial membrane as a fraction of theta (0 in the paper; 0.5 halves the rate-coding error with
            reset by subtraction: the rate then rounds a / theta instead of flooring it, Bu et al., ICLR 2022).
    """

    def __init__(
        self,
        threshold: float = 1.0,
        reset: str = "zero",
        surrogate: Union[str, Mapping[str, Any], Surrogate] = "triangular",
        min_threshold: float = 0.03,
        detach_reset: bool = False,
        v_init: float = 0.0,
    ):
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        sg = make_surrogate(surrogate)
        super().__init__(
            beta=1.0,
            threshold=float(threshold),
            spike_grad=sg,
            learn_threshold=True,
            reset_mechanism=reset,
            reset_delay=False,
        )
        untrack(self)
        self.reset_mode = reset
        self.min_threshold = float(min_threshold)
        self.detach_reset = bool(detach_reset)
        if not 0 <= float(v_init) < 1:
            raise ValueError(f"v_init must be in [0, 1) (a fraction of the threshold), got {v_init!r}")
        self.v_init = float(v_init)
        self.num_steps = 1
        self.mode = "spike"
        self.path: Path | None = None  # an attack path of srsnn.snn.gradients, set by gradient_path's block
        # stepping through time (``SpikingNetwork(schedule="time")``): each call is one step from ``state``; the
        # network sets both at the start of its forward and clears them at the end (no state between forwards)
        self.stepping = False
        self.state: torch.Tensor | None = None

    @property
    def surrogate(self) -> Surrogate:
        return self.spike_grad

    @surrogate.setter
    def surrogate(self, spec) -> None:
        self.spike_grad = make_surrogate(spec)

    def effective_threshold(self) -> torch.Tensor:
        return self.threshold.clamp_min(self.min_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        theta = self.effective_threshold()
        if self.mode == "relu":
            return torch.relu(x)
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):
            # mixed precision (autocast): integrate and compare with theta in float32. In 16 bits, a membrane
            # summing T inputs loses their low bits and v >= theta flips spikes; spikes (0/1) are exact in any dtype
            x = x.float()
        T = self.num_steps
        if x.shape[0] % T:
            raise ValueError(f"IFNeuron: leading dim {x.shape[0]} is not a multiple of num_steps={T}")
        xt = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        v0 = self.state
        if v0 is None and self.v_init:
            v0 = (theta * self.v_init).expand_as(xt[0])
        path = self.path or SurrogatePath(self.spike_grad, scaled=False)
        spikes, v = _IFMultiStep.apply(xt, v0, theta, path, self.reset_mode == "zero", self.detach_reset)
        if self.stepping:
            self.state = v
        return spikes.reshape_as(x).to(dtype)

    def extra_repr(self) -> str:
        return (
            f"reset={self.reset_mode}{' (detached)' if self.detach_reset else ''}"
            f"{f', v_init={self.v_init}' if self.v_init else ''}, surrogate={self.spike_grad!r}, "
            f"mode={self.mode}, T={self.num_steps}"
        )
