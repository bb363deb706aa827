"""Multi-step execution of a converted network and switching its gradient path.

``SpikingNetwork`` runs a converted ``nn.Sequential`` for T steps with direct input coding (the analog image
enters the first layer at every step): the stateless prefix up to the first neuron (normalisation, first
conv, its BN) is computed once and repeated T times, every later stateless layer runs once on the folded
``[T*B, ...]`` tensor, and only the IF recurrence steps through time. Readout: the last linear layer's
output averaged over T, ``y = (1/T) sum_t W s^L_t``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from .neurons import MODES, IFNeuron
from .surrogates import make_surrogate


def neurons_of(net: nn.Module) -> list[IFNeuron]:
    return [m for m in net.modules() if isinstance(m, IFNeuron)]


def _contains_neuron(module: nn.Module) -> bool:
    return any(isinstance(m, IFNeuron) for m in module.modules())


class SpikingNetwork(nn.Module):
    """Runs ``net`` (an ``nn.Sequential`` with ``IFNeuron`` slots) for ``num_steps`` steps.

    Args:
        net: the converted network.
        num_steps: T (paper: 8).
        encoding: ``"direct"`` (paper) or ``"poisson"`` (rate coding, straight-through gradient to the image).
        fold: time steps per conv/linear call (default: all T in one call). Smaller values bound the size of
            one convolution call; on the 2-core CPU of ``bench/snn_step.py`` 1 and 8 measured within noise.
    """

    def __init__(self, net: nn.Sequential, num_steps: int = 8, encoding: str = "direct", fold: Optional[int] = None):
        super().__init__()
        if not isinstance(net, nn.Sequential):
            raise TypeError("SpikingNetwork expects an nn.Sequential network (all nets in nets.architectures are)")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps (T) must be >= 1, got {num_steps}")
        if encoding not in ("direct", "poisson"):
            raise ValueError(f"encoding must be 'direct' or 'poisson', got {encoding!r}")
        self.net = net
        self.num_steps = int(num_steps)
        self.encoding = encoding
        if fold is not None and int(fold) < 1:
            raise ValueError(f"fold must be >= 1, got {fold}")
        self.fold = fold
        first = next((i for i, m in enumerate(net) if _contains_neuron(m)), len(net))
        self._prefix_len = first

    @property
    def neurons(self) -> list[IFNeuron]:
        return neurons_of(self.net)

    def forward(self, x: torch.Tensor, num_steps: Optional[int] = None) -> torch.Tensor:
        neurons = self.neurons
        T = int(num_steps or self.num_steps)
        if neurons and all(n.mode == "relu" for n in neurons):
            T = 1  # the ReLU path is time-invariant
        for n in neurons:
            n.num_steps = T
        B = x.shape[0]
        if self.encoding == "direct":
            h = x
            layers = list(self.net)
            for m in layers[: self._prefix_len]:
                h = m(h)
            h = h.repeat(T, *([1] * (h.dim() - 1)))
            rest = layers[self._prefix_len:]
        else:
            xs = x.unsqueeze(0).expand(T, *x.shape)
            h = ((torch.rand_like(xs) < xs).to(x.dtype) + xs - xs.detach()).reshape(T * B, *x.shape[1:])
            rest = self.net
        fold = self.fold or T
        for m in rest:
            if fold < T and isinstance(m, (nn.Conv2d, nn.Linear)):
                h = torch.cat([m(chunk) for chunk in h.split(fold * B)])
            else:
                h = m(h)
        return h.reshape(T, B, *h.shape[1:]).mean(0)


@contextlib.contextmanager
def gradient_path(net: nn.Module, mode: str = "spike", surrogate=None) -> Iterator[None]:
    """Temporarily switch every neuron of ``net`` to a gradient path (a view of the same weights)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    neurons = neurons_of(net)
    saved = [(n.mode, n.spike_grad) for n in neurons]
    sg = make_surrogate(surrogate) if surrogate is not None else None
    try:
        for n in neurons:
            n.mode = mode
            if sg is not None:
                n.spike_grad = sg
        yield
    finally:
        for n, (m, g) in zip(neurons, saved):
            n.mode, n.spike_grad = m, g
