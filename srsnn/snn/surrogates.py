"""Surrogate gradients for the Heaviside spike function, as small factories nameable from YAML.

Forward, every surrogate is the same step function ``S(x) = 1[x >= 0]`` with ``x = v - V_th``.
Backward, ``dS/dx`` is replaced by a smooth pseudo-derivative ``g(x)``:

* ``triangular(gamma)``   g(x) = (1/gamma^2) * max(0, gamma - |x|)           (paper, gamma = 1)
* ``exponential(gamma_d, gamma_s)``  g(x) = gamma_d * exp(-gamma_s * |x|)
* ``rectangular(gamma)``  g(x) = (1/gamma) * 1[|x| < gamma/2]
* ``straight_through()``  g(x) = 1
* ``atan(alpha)``         g(x) = alpha/2 / (1 + (pi/2 * alpha * x)^2)      (snnTorch's default)
* ``fast_sigmoid(slope)`` g(x) = 1 / (slope * |x| + 1)^2                   (snnTorch's fast sigmoid)

Each surrogate is callable like snnTorch's ``spike_grad`` (so it can be handed to ``snntorch.Leaky``) and
exposes ``derivative(x)`` so the fused multi-step IF kernel can apply it without building a graph per step.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: "Surrogate") -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None


class Surrogate:
    """A named pseudo-derivative ``g``; ``__call__`` is the spike function with ``g`` as its gradient."""

    name = "surrogate"

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative_(self, x: torch.Tensor) -> torch.Tensor:
        """``derivative`` that may overwrite ``x`` (a temporary): the fused kernel's backward saves allocations."""
        return self.derivative(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Heaviside.apply(x, self)

    def params(self) -> dict[str, float]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params().items())
        return f"{self.name}({args})"


def _positive(name: str, **values: float) -> None:
    for key, value in values.items():
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"surrogate '{name}': {key} must be a positive number, got {value!r}")


class Triangular(Surrogate):
    name = "triangular"

    def __init__(self, gamma: float = 1.0):
        _positive(self.name, gamma=gamma)
        self.gamma = float(gamma)

    def derivative(self, x):
        return (self.gamma - x.abs()).clamp_min(0) / self.gamma**2

    def derivative_(self, x):
        return x.abs_().neg_().add_(self.gamma).clamp_min_(0).mul_(1.0 / self.gamma**2)


class Exponential(Surrogate):
    name = "exponential"

    def __init__(self, gamma_d: float = 0.3, gamma_s: float = 1.0):
        _positive(self.name, gamma_d=gamma_d, gamma_s=gamma_s)
        self.gamma_d, self.gamma_s = float(gamma_d), float(gamma_s)

    def derivative(self, x):
        return self.gamma_d * torch.exp(-self.gamma_s * x.abs())

    def derivative_(self, x):
        return x.abs_().mul_(-self.gamma_s).exp_().mul_(self.gamma_d)


class Rectangular(Surrogate):
    name = "rectangular"

    def __init__(self, gamma: float = 1.0):
        _positive(self.name, gamma=gamma)
        self.gamma = float(gamma)

    def derivative(self, x):
        return (x.abs() < self.gamma / 2).to(x.dtype) / self.gamma


class StraightThrough(Surrogate):
    name = "straight_through"

    def derivative(self, x):
        return torch.ones_like(x)


class ATan(Surrogate):
    name = "atan"

    def __init__(self, alpha: float = 2.0):
        _positive(self.name, alpha=alpha)
        self.alpha = float(alpha)

    def derivative(self, x):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x) ** 2)


class FastSigmoid(Surrogate):
    name = "fast_sigmoid"

    def __init__(self, slope: float = 25.0):
        _positive(self.name, slope=slope)
        self.slope = float(slope)

    def derivative(self, x):
        return 1.0 / (self.slope * x.abs() + 1.0) ** 2


SURROGATES: dict[str, Callable[..., Surrogate]] = {
    cls.name: cls for cls in (Triangular, Exponential, Rectangular, StraightThrough, ATan, FastSigmoid)
}


def make_surrogate(spec: "str | Mapping[str, Any] | Surrogate") -> Surrogate:
    """Build a surrogate from ``"triangular"``, ``{"name": "triangular", "gamma": 0.5}`` or an instance."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    try:
        return SURROGATES[name](**spec)
    except TypeError as err:
        raise ValueError(f"surrogate {name!r}: bad arguments {spec}: {err}") from None
