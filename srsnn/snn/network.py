"""Multi-step execution of a converted network and switching its gradient path.

``SpikingNetwork`` runs a converted ``nn.Sequential`` for T steps with direct input coding (the analog image
enters the first layer at every step): the stateless prefix up to the first neuron (normalisation, first
conv, its BN) is computed once and repeated T times, every later stateless layer runs once on the folded
``[T*B, ...]`` tensor, and only the IF recurrence steps through time (``schedule="layer"``, the default and
the paper's setting: BatchNorm statistics over batch x time). ``schedule="time"`` runs the layers after the
prefix once per time step instead, like snnTorch's loop but with the prefix computed once and one fused node
per neuron call: the working set of a step stays in the CPU's cache, which makes it the faster schedule on CPUs
(``bench/snn_step.py``). The two give identical outputs except for BatchNorm in *training* mode, which then
normalises each step with that step's batch statistics (as snnTorch's loop does). Readout: the last linear
layer's output averaged over T, ``y = (1/T) sum_t W s^L_t``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal, Optional, get_args

import torch
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn

from srsnn.snn.gradients import make_path
from srsnn.snn.native import NativeNet, has_native_neurons, spiking_neurons
from srsnn.snn.native_paths import native_gradient_path, reset_native_path_state
from srsnn.snn.neurons import MODES, IFNeuron
from srsnn.snn.steps import mean_over_steps
from srsnn.snn.surrogates import make_surrogate

Schedule = Literal["auto", "layer", "time"]
Encoding = Literal["direct", "poisson"]  # the image as input current every step, or Poisson spikes
SCHEDULES = get_args(Schedule)


# per-sample size of the first spiking layer's input above which the time-major order wins on a CPU (measured with
# bench/snn_step.py: reference 32x32x32 -> time 1.5x faster than layer; mnist5k 16x16x16 -> about even; digits
# 8x8x16 -> layer 1.6x faster)
TIME_MAJOR_MIN_FEATURES = 4096


def resolve_schedule(schedule: str, device: torch.device, features: int = TIME_MAJOR_MIN_FEATURES) -> str:
    """``auto``: ``time`` on CPUs when each sample's input to the first spiking layer has at least
    ``TIME_MAJOR_MIN_FEATURES`` elements (a step's working set then outgrows the cache), ``layer`` otherwise and on
    GPUs (one big [T*B] batch per layer keeps a GPU busy). Eval-mode outputs are the same either way."""
    if schedule != "auto":
        return schedule
    return "time" if device.type == "cpu" and features >= TIME_MAJOR_MIN_FEATURES else "layer"


def neurons_of(net: nn.Module) -> list[IFNeuron]:
    return [m for m in net.modules() if isinstance(m, IFNeuron)]


def stateless_prefix(net: nn.Sequential) -> int:
    """How many leading layers of ``net`` hold no neuron: under direct coding they see the analog image, the same at
    every step (computed once by ``SpikingNetwork``; their MACs are counted apart from synops)."""
    return next((i for i, m in enumerate(net) if any(isinstance(c, SpikingNeuron) for c in m.modules())), len(net))


def stepwise_neurons(net: nn.Module) -> list[nn.Module]:
    """The snnTorch neurons of ``net`` other than the IF neuron (which runs all T steps in one call): each call of
    theirs is one time step, their membrane kept inside (``init_hidden``), so the network runs step by step."""
    return [m for m in net.modules() if isinstance(m, SpikingNeuron) and not isinstance(m, IFNeuron)]


class SpikingNetwork(nn.Module):
    """Runs ``net`` (an ``nn.Sequential`` with ``IFNeuron`` slots) for ``num_steps`` steps.

    Args:
        net: the converted network.
        num_steps: T (paper: 8).
        encoding: ``"direct"`` (paper) or ``"poisson"`` (rate coding, straight-through gradient to the image).
        fold: with ``schedule="layer"``, time steps per conv/linear call (default: all T in one call).
        schedule: ``"layer"`` (all T per layer, [T*B] batches; GPU), ``"time"`` (all layers per step; CPU) or
            ``"auto"`` (``time`` on CPU for all but tiny inputs, ``layer`` elsewhere; ``resolve_schedule``).
    """

    def __init__(
        self,
        net: nn.Sequential,
        num_steps: int = 8,
        encoding: str = "direct",
        fold: Optional[int] = None,
        schedule: str = "layer",
    ):
        super().__init__()
        if not isinstance(net, nn.Sequential):
            raise TypeError("SpikingNetwork expects an nn.Sequential network (all nets in srsnn.ann.architectures are)")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps (T) must be >= 1, got {num_steps}")
        if encoding not in get_args(Encoding):
            raise ValueError(f"encoding must be one of {get_args(Encoding)}, got {encoding!r}")
        self.net = net
        self.num_steps = int(num_steps)
        self.encoding = encoding
        if fold is not None and int(fold) < 1:
            raise ValueError(f"fold must be >= 1, got {fold}")
        self.fold = fold
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        self._prefix_len = stateless_prefix(net)
        self._stepwise = stepwise_neurons(net)  # snnTorch neurons (a conversion to Leaky): one call per step

    @property
    def neurons(self) -> list[IFNeuron]:
        return neurons_of(self.net)

    def forward(self, x: torch.Tensor, num_steps: Optional[int] = None) -> torch.Tensor:
        neurons = self.neurons
        T = int(num_steps or self.num_steps)
        if neurons and all(n.mode == "relu" for n in neurons):
            T = 1  # the ReLU path is time-invariant
        B = x.shape[0]
        if x.dim() == 4 and x.device.type == "cpu":
            # oneDNN's convolutions are ~1.4x faster on NHWC; the format propagates through the network
            x = x.contiguous(memory_format=torch.channels_last)
        if self.encoding == "direct" and not self._stepwise:
            h = x
            for m in list(self.net)[: self._prefix_len]:
                h = m(h)  # the analog input is the same every step: compute once
            rest = list(self.net)[self._prefix_len :]
            steps = [h] * T
        elif self.encoding == "direct":  # step by step, the analog input too (a neuron chip reads it every step)
            steps, rest = [x] * T, list(self.net)
        else:
            xs = x.unsqueeze(0).expand(T, *x.shape)
            steps = list((torch.rand_like(xs) < xs).to(x.dtype) + xs - xs.detach())
            rest = list(self.net)
        # stepping needs every neuron on the plain spiking path (the attack paths read all T steps at once)
        plain = all(n.mode == "spike" for n in neurons)
        if self._stepwise:  # a new input starts from rest; each neuron call is one step
            for m in self._stepwise:
                m.reset_mem()
            return self._time_major(rest, steps, neurons)
        if plain and T > 1 and resolve_schedule(self.schedule, x.device, steps[0][0].numel()) == "time":
            return self._time_major(rest, steps, neurons)
        for n in neurons:
            n.num_steps = T
        h = torch.cat(steps) if len(steps) > 1 else steps[0]
        fold = self.fold or T
        for m in rest:
            if fold < T and isinstance(m, (nn.Conv2d, nn.Linear)):
                h = torch.cat([m(chunk) for chunk in h.split(fold * B)])
            else:
                h = m(h)
        return mean_over_steps(h.reshape(T, B, *h.shape[1:]).unbind(0))

    def _time_major(self, rest: list[nn.Module], steps: list[torch.Tensor], neurons: list[IFNeuron]) -> torch.Tensor:
        for n in neurons:
            n.num_steps, n.stepping, n.state = 1, True, None
        try:
            return mean_over_steps(_through(rest, h) for h in steps)
        finally:
            for n in neurons:  # no membrane (and no autograd history) survives the forward
                n.stepping, n.state = False, None


def _through(layers: list[nn.Module], h: torch.Tensor) -> torch.Tensor:
    for m in layers:
        h = m(h)
    return h


def layers_of(snn: nn.Module) -> nn.Module:
    """The network that holds an SNN's layers under its runners (``NativeNet``, ``SpikingNetwork``): the module whose
    names its synop, energy and sparsity records use."""
    while isinstance(snn, (NativeNet, SpikingNetwork)):
        snn = snn.net
    return snn


@contextlib.contextmanager
def record_spikes(net: nn.Module, sink) -> Iterator[None]:
    """While active, every call of a spiking neuron of ``net`` (the IF neuron over its steps, an snnTorch neuron one
    step) calls ``sink(neuron, spikes)`` with its spikes [steps, B, ...]: the one spike recorder, for synop counting
    and firing rates."""

    def hook(neuron, _inp, out):
        spikes = (out[0] if isinstance(out, (tuple, list)) else out).detach()
        steps = neuron.num_steps if isinstance(neuron, IFNeuron) else 1
        sink(neuron, spikes.reshape(steps, -1, *spikes.shape[1:]))

    handles = [m.register_forward_hook(hook) for _, m in spiking_neurons(net)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def gradient_path(net: nn.Module, mode: str = "spike", surrogate=None, param: Optional[float] = None) -> Iterator[None]:
    """Temporarily switch every neuron of ``net`` to a gradient path (a view of the same weights); ``param``: the
    path's hyperparameter (A of ``assg``, gamma of ``hart``). ASSG's running means start afresh in every block.
    A network of snnTorch neurons (no IF neuron of this repo) takes ``srsnn.snn.native``'s paths."""
    if not neurons_of(net) and has_native_neurons(net):
        with native_gradient_path(net, mode, surrogate, param):
            yield
        return
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    neurons = neurons_of(net)
    saved = [(n.mode, n.spike_grad, n.path) for n in neurons]
    sg = make_surrogate(surrogate) if surrogate is not None else None
    try:
        for n in neurons:
            n.mode = mode
            n.path = make_path(mode, param=param, scaled=False) if mode not in ("spike", "relu") else None
            if sg is not None:
                n.spike_grad = sg
        yield
    finally:
        for n, (m, g, p) in zip(neurons, saved):
            n.mode, n.spike_grad, n.path = m, g, p


def reset_path_state(net: nn.Module) -> None:
    """Forget what a gradient path keeps between forwards (ASSG's running means): a new attack start begins afresh."""
    for n in neurons_of(net):
        if n.path is not None:
            n.path.start()
    reset_native_path_state(net)
