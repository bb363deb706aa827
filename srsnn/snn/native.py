"""SNNs the user built with snnTorch: their spiking neurons found by type, their state reset, and ``NativeNet``, the
network with its readout, the logits the evaluation attacks (its gradient paths: ``srsnn.snn.native_paths``).
``reset_states`` zeroes the membranes of *this* network only (``snntorch.utils.reset`` would reset every network in
the process).
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

import snntorch
import torch
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn

from srsnn.errors import UserError
from srsnn.snn.steps import mean_over_steps, sum_over_steps

SUPPORTED = (
    snntorch.Leaky,
    snntorch.Synaptic,
    snntorch.Alpha,
    snntorch.Lapicque,
    snntorch.RLeaky,
    snntorch.RSynaptic,
)
_REGISTERED: list[type] = []


def register_neuron(cls: type) -> type:
    """Declare a neuron class the repo does not know as one that fires through ``self.spike_grad(mem -
    self.threshold)`` and has ``reset_mem()`` (usable as a class decorator)."""
    if not callable(getattr(cls, "reset_mem", None)):
        raise UserError(f"register_neuron: {cls.__name__} has no reset_mem() to zero its state between inputs")
    if cls not in _REGISTERED:
        _REGISTERED.append(cls)
    return cls


def _known() -> tuple[type, ...]:
    return SUPPORTED + tuple(_REGISTERED)


def first_spiking(net: nn.Module) -> Optional[str]:
    """``"path (Type)"`` of the first snnTorch spiking neuron of ``net`` (None for a network without one)."""
    return next((f"{n} ({type(m).__name__})" for n, m in net.named_modules() if isinstance(m, SpikingNeuron)), None)


def spiking_neurons(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every spiking neuron of ``net`` wherever it sits in the module tree, as ``(path, module)``, in definition
    order. An snnTorch neuron of another kind (an LSTM cell, a parallel or unrolled neuron) is refused by name."""
    found = []
    for name, m in net.named_modules():
        if isinstance(m, _known()):
            found.append((name, m))
        elif isinstance(m, SpikingNeuron):
            raise UserError(
                f"{name or 'the network'}: {type(m).__name__} is a spiking neuron this repo cannot attack or count "
                f"(supported: {', '.join(c.__name__ for c in SUPPORTED)}); if it fires through "
                "spike_grad(mem - threshold), declare it with srsnn.snn.native.register_neuron"
            )
    return found


def describe(m: nn.Module) -> dict:
    """What the evaluation reads from a neuron: its type, threshold, reset mechanism and leak."""
    info = {"type": type(m).__name__, "threshold": float(torch.as_tensor(m.threshold).mean())}
    info["reset"] = getattr(m, "reset_mechanism", None)
    for key in ("beta", "alpha"):
        v = getattr(m, key, None)
        if isinstance(v, (torch.Tensor, float, int)):
            info[key] = float(torch.as_tensor(v).float().mean())
    return info


def reset_states(net: nn.Module) -> None:
    """Zero the hidden state of this network's neurons (a new input starts from rest) and restart the per-forward
    call count of a stateful gradient path."""
    _reset([m for _, m in spiking_neurons(net)])


def _reset(neurons: list[nn.Module]) -> None:
    for m in neurons:
        with torch.no_grad():
            m.reset_mem()
        new_forward = getattr(m.spike_grad, "new_forward", None)  # a path that keeps per-forward state
        if new_forward is not None:
            new_forward()


def has_native_neurons(net: nn.Module) -> bool:
    return any(isinstance(m, _known()) for m in net.modules())


Readout = Literal["auto", "spike_count", "membrane_mean", "logits"]
READOUTS = get_args(Readout)


class NativeNet(nn.Module):
    """``logits = readout(net(x))`` for an snnTorch network ``net``, its neurons reset before every input.

    ``net(x)`` returns the records over time, ``(spikes [T, B, C], membranes [T, B, C])`` as snnTorch's tutorials
    do, or one ``[T, B, C]`` tensor, or logits ``[B, C]``. Readouts: ``spike_count`` (sum over time of the spikes),
    ``membrane_mean`` (mean over time of the membranes), ``logits`` (the output as it is), ``auto`` (logits for a
    ``[B, C]`` output, else the spike count). The time dimension is the one that is not the batch (``time_dim``
    states it where both have one size).

    ``eot``: a net that draws its own input spikes (e.g. ``snntorch.spikegen.rate`` in its forward) is random: its
    logits are the mean over ``eot`` forwards (expectation over transformation, Athalye et al., ICML 2018), so an
    attack follows the expected gradient and accuracy is judged on the expected output. A random net with
    ``eot = 1`` is refused at its first forward in eval mode (an attack on one draw overestimates robustness)."""

    def __init__(self, net: nn.Module, readout: str = "auto", time_dim: Optional[int] = None, eot: int = 1):
        super().__init__()
        if readout not in READOUTS:
            raise UserError(f"readout must be one of {READOUTS}, got {readout!r}")
        if not (isinstance(eot, int) and eot >= 1):
            raise UserError(f"eot must be a positive integer (forwards averaged per input), got {eot!r}")
        self.eot, self._checked = eot, False
        self.path_forward = None  # a gradient path that replaces the whole forward (HART), set by its block
        self._neurons = [m for _, m in spiking_neurons(net)]  # the tree is fixed: found once, reset every forward
        if not self._neurons:
            raise UserError(
                f"{type(net).__name__} has no snnTorch spiking neuron (Leaky, Synaptic, ...); an ANN is trained and "
                "evaluated with lightning_modules.RobustANN"
            )
        self.net, self.readout, self.time_dim = net, readout, time_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        once = self.path_forward if self.path_forward is not None and torch.is_grad_enabled() else self._once
        out = once(x) if self.eot == 1 else mean_over_steps(once(x) for _ in range(self.eot))
        if not (self.training or self._checked):
            self._checked = True
            with torch.no_grad():
                if self.eot == 1 and not torch.equal(self._once(x), out):
                    raise UserError(
                        f"{type(self.net).__name__} gives another output for the same input in eval mode (does it "
                        "draw its own input spikes, e.g. snntorch.spikegen.rate?): an attack on one random draw "
                        "overestimates robustness; set model.init_args.eot: 16 (the logits: the mean over 16 draws)"
                    )
        return out

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        _reset(self._neurons)
        return self.read(self.net(x), x)

    def _time(self, rec: torch.Tensor, x: torch.Tensor) -> int:
        """The records' time dimension: stated, or the one that is not the batch (told once, by a one-sample forward
        where T equals the batch size)."""
        if self.time_dim is None:
            batch = x.shape[0]
            if rec.shape[1] == batch and rec.shape[0] == batch:
                with torch.no_grad():
                    _reset(self._neurons)
                    one = self.net(x[:1])
                probe = one[0] if isinstance(one, (tuple, list)) else one
                self.time_dim = _time_dim(probe, 1)
            else:
                self.time_dim = _time_dim(rec, batch)
        return self.time_dim

    def read(self, out, x: torch.Tensor) -> torch.Tensor:
        records = isinstance(out, (tuple, list))
        mode = self.readout
        if mode == "auto":
            mode = "logits" if not records and torch.is_tensor(out) and out.dim() == 2 else "spike_count"
        if mode == "logits":
            if records or out.dim() != 2:
                raise UserError(
                    f"readout 'logits': the net returns {_shape(out)}, not [batch, classes]; use readout "
                    "spike_count or membrane_mean for records over time"
                )
            return out
        if mode == "membrane_mean" and not (records and len(out) > 1):
            raise UserError("readout 'membrane_mean' needs the net to return (spikes, membranes) records")
        rec = (out[0] if mode == "spike_count" else out[1]) if records else out
        if rec.dim() != 3:
            raise UserError(
                f"the net returns {_shape(out)}: no time dimension to read out over; return the records "
                "[T, batch, classes] (torch.stack of each step's output), or set readout: logits if it returns logits"
            )
        t = self._time(rec, x)
        total = sum_over_steps(rec.unbind(t))
        return total if mode == "spike_count" else total / rec.shape[t]


def _shape(out) -> str:
    if isinstance(out, (tuple, list)):
        return "(" + ", ".join(_shape(o) for o in out) + ")"
    return str(list(out.shape)) if torch.is_tensor(out) else type(out).__name__


def _time_dim(rec: torch.Tensor, batch: int) -> int:
    if rec.shape[1] == batch:  # [T, B, C] (snnTorch's), or T = B = 1
        return 0
    if rec.shape[0] == batch:
        return 1
    raise UserError(f"the net's records {list(rec.shape)} have no batch dimension of size {batch}")
