"""Gradient paths, each written once for every neuron this repo runs: the converted network's IF neuron (its fused
T-step kernel, ``srsnn.snn.neurons``) and the snnTorch neurons of a network you built (``srsnn.snn.native_paths``).

Forward, every path is the deployed spike ``s_t = H(u_t - theta)``. Backward, ``dS_t/du_t`` is replaced by a local
derivative g_t that the path fixes at step t of the forward, from v = u_t - theta (detached), the neuron's input x_t
and its spike s_t: ``g_t = path.local(t, v, x, s, theta)``, a function of v applied at backward. Two flags say what
else changes: ``detach_history`` cuts the membrane chain to earlier steps (dL/du_t = dL/ds_t g_t), ``mean_over_time``
gives every step the mean over T of the steps' input gradients (HART). ``per_step`` paths keep a record per step,
so a neuron whose reset also calls its ``spike_grad`` must not do so while they are on.

* ``spike`` (``SurrogatePath``): a surrogate of ``srsnn.snn.surrogates``; the IF neuron applies it to v as the
  reference code does (``scaled=False``), snnTorch neurons scaled to their threshold, ``g(v / theta) / theta``;
* ``assg`` (``ASSG``, Wang et al., arXiv 2512.22522): g_t(v) = (a_t / 2) / (1 + (pi a_t v / 2)^2) with a per-element
  sharpness from running means over one attack start's iterations (``RunningSharpness``); reset detached;
* ``hart`` (``HART``, Hao et al., ICLR 2024): the triangle g(v) = max(0, w - |v|) / w^2, w = gamma theta, a detached
  history and every step's input gradient the mean over T;
* ``pdsg`` (``PDSG``, Lun et al., CVPR 2025): a Gaussian g(v) = N(v; sigma / 2, sigma), sigma the standard deviation
  of v over this forward's steps so far per sample and channel (the paper's batch-1 case: per-sample records stay
  identical on any process count); sigma = 0 is taken as theta;
* ``rga`` (``RGA``, the reference's ``RateBp``): a detached history and g = (1 - 0.2 + 0.2 tau) / (tau + 1) / theta
  where the mean input over the forward, in threshold units, lies in [1 - tau, 2], 0.2 / theta on [0, 1 - tau), else
  0 (tau the leak, 1 for IF: 1 / (2 theta) on [0, 2 theta]);
* ``bptr`` (``BPTR``, the reference's ``RateBp2``): a detached history and g = 1[the neuron fired at some step].
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch

from srsnn.snn.steps import mean_over_steps
from srsnn.snn.surrogates import Surrogate, make_surrogate

Derivative = Callable[[torch.Tensor], torch.Tensor]
# the published defaults of the SNN attack paths' one hyperparameter: ASSG's A (Wang et al.) and HART's gamma relative
# to the threshold (Hao et al.); every path, the tuning grid and the fallback read them from here
ASSG_A, HART_GAMMA = 0.425, 1.0
ASSG_BETA, ASSG_RELAX = 0.9, 1.5  # ASSG's running means' decay and dispersion weight (Wang et al.)


class Path:
    """A gradient path (module docstring); one instance per neuron, for the length of a ``gradient_path`` block."""

    name = "path"
    detach_history = False
    mean_over_time = False
    per_step = False

    def start(self) -> None:
        """A new attack start: what the path keeps across iterations (ASSG's running means) begins afresh."""

    def new_forward(self) -> None:
        """A new input: the per-forward record begins afresh (an earlier forward's backward keeps its own)."""

    def local(self, t: int, v: torch.Tensor, x: Optional[torch.Tensor], s: torch.Tensor, theta) -> Derivative:
        raise NotImplementedError


class SurrogatePath(Path):
    name = "spike"

    def __init__(self, surrogate: Surrogate, scaled: bool):
        self.surrogate, self.scaled = surrogate, scaled

    def local(self, t, v, x, s, theta) -> Derivative:
        sg = self.surrogate
        if not self.scaled:
            return sg.derivative_  # may overwrite its argument: the IF kernel hands it a temporary
        return lambda v: sg.derivative(v / theta) / theta


def assg_omega(a: float) -> float:
    """omega = 2 tan(pi A) / pi: at |v| = E|v| the surrogate's primitive covers a fraction 2A of its mass."""
    return 2 * math.tan(math.pi * a) / math.pi


def atan_derivative(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ASSG's surrogate g(v) = (a / 2) / (1 + (pi a v / 2)^2)."""
    return (a / 2) / (1 + (math.pi / 2 * a * v) ** 2)


class RunningSharpness:
    """ASSG's sharpness: per neuron element and step t, running means kept across one attack start's iterations,

        M_t <- 0.9 M_t + 0.1 |v_t|,   D_t <- 0.9 D_t + 0.1 ||v_t| - M_t|,   a_t = omega / (M_t + 1.5 D_t),

    with M starting at theta (scale-adaptive to each layer's threshold) and D at 0; a new batch shape at a step starts
    that step afresh."""

    def __init__(self, a: float | None = None):
        self.a = ASSG_A if a is None else float(a)
        self.omega, self.stats = assg_omega(self.a), []

    def reset(self) -> None:
        self.stats = []

    @torch.no_grad()
    def alpha(self, dist: torch.Tensor, t: int, theta) -> torch.Tensor:
        """Update step ``t``'s means with ``dist`` = |v_t| and return a_t (``theta``: a float or a 0-dim tensor)."""
        if t >= len(self.stats) or self.stats[t][0].shape != dist.shape:
            del self.stats[t:]
            self.stats.append((torch.full_like(dist, float(theta)), torch.zeros_like(dist)))
        m, d = self.stats[t]
        m = ASSG_BETA * m + (1 - ASSG_BETA) * dist
        d = ASSG_BETA * d + (1 - ASSG_BETA) * (dist - m).abs()
        self.stats[t] = (m, d)
        return self.omega / (m + ASSG_RELAX * d + 1e-4 * theta)


class ASSG(Path):
    name = "assg"

    def __init__(self, a: float | None = None):
        self.sharpness = RunningSharpness(a)

    def start(self) -> None:
        self.sharpness.reset()

    def local(self, t, v, x, s, theta) -> Derivative:
        a = self.sharpness.alpha(v.abs(), t, theta)
        return lambda v: atan_derivative(a, v)


class HART(Path):
    name, detach_history, mean_over_time = "hart", True, True

    def __init__(self, gamma: float | None = None):
        self.gamma = HART_GAMMA if gamma is None else float(gamma)

    def local(self, t, v, x, s, theta) -> Derivative:
        w = self.gamma * theta
        return lambda v: (w - v.abs()).clamp_min(0) / w**2


class PDSG(Path):
    name, per_step = "pdsg", True

    def __init__(self):
        self.history: list[torch.Tensor] = []

    def new_forward(self) -> None:
        self.history = []

    def local(self, t, v, x, s, theta) -> Derivative:
        if self.history and self.history[-1].shape != v.shape:
            self.history = []
        self.history.append(v)
        # per sample and channel over time and every dim after the channel, each (sample, channel) one contiguous row
        # (a reduction over the batch-crossing dims would round a sample's sigma by its batch's size)
        h = torch.stack(self.history).movedim(0, 2).flatten(2)  # [B, C, t * ...]
        if h.shape[-1] > 1:
            sigma = h.std(-1).view(*v.shape[:2], *[1] * (v.dim() - 2))
        else:
            sigma = torch.zeros_like(v)
        sigma = torch.where(sigma > 0, sigma, torch.full_like(sigma, float(theta)))
        mu, norm = sigma / 2, math.sqrt(2 * math.pi) * sigma
        return lambda v: torch.exp(-((v - mu) ** 2) / (2 * sigma**2)) / norm


class RGA(Path):
    name, detach_history, per_step = "rga", True, True

    def __init__(self, tau: float = 1.0):
        self.tau = tau
        self.new_forward()

    def new_forward(self) -> None:
        # the mean is taken once, at the first backward step (every step's input is recorded by then)
        self.inputs: list[torch.Tensor] = []
        self.mean_input = functools.cache(lambda inputs=self.inputs: mean_over_steps(inputs))

    def local(self, t, v, x, s, theta) -> Derivative:
        self.inputs.append(x.detach())
        mean_input, tau = self.mean_input, self.tau

        def g(v: torch.Tensor) -> torch.Tensor:
            xbar = mean_input() / theta
            high = ((xbar >= 1 - tau) & (xbar <= 2)).to(v.dtype) * (1 - 0.2 + 0.2 * tau) / (tau + 1)
            return (high + ((xbar >= 0) & (xbar < 1 - tau)).to(v.dtype) * 0.2) / theta

        return g


class BPTR(Path):
    name, detach_history, per_step = "bptr", True, True

    def __init__(self):
        self.new_forward()

    def new_forward(self) -> None:
        # reduced once, at the first backward step (the record is complete by then)
        self.spikes: list[torch.Tensor] = []
        self.fired = functools.cache(lambda spikes=self.spikes: torch.stack(spikes).any(0))

    def local(self, t, v, x, s, theta) -> Derivative:
        self.spikes.append(s.detach() != 0)
        fired = self.fired
        return lambda v: fired().to(v.dtype)


PATHS = {"assg": ASSG, "hart": HART, "pdsg": PDSG, "rga": RGA, "bptr": BPTR}


def make_path(mode: str, surrogate=None, param: Optional[float] = None, *, scaled: bool, tau: float = 1.0) -> Path:
    """The path ``mode`` for one neuron: ``spike`` with ``surrogate`` (a name or spec), ``param`` the path's one
    hyperparameter (A of ``assg``, gamma of ``hart``), ``tau`` the neuron's leak (``rga``)."""
    if mode == "spike":
        return SurrogatePath(make_surrogate(surrogate), scaled)
    if mode in ("assg", "hart"):
        return PATHS[mode](param)
    return PATHS[mode](tau) if mode == "rga" else PATHS[mode]()
