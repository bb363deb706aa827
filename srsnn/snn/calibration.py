"""Conversion step ``calibrate``: each IF neuron's threshold from its pre-activations, first layer first.

V_th^l = scale * max_batches percentile_rho(pre-activations of layer l over T_c steps), clamped >= the neuron's
``min_threshold`` (Schmolli et al., CPAL 2025, Stage 2; the reference code's order and defaults).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Literal, Mapping, get_args

import torch
from torch import nn

from srsnn.errors import ConversionError, UserError
from srsnn.modes import module_mode
from srsnn.pruning.masks import raw_weight
from srsnn.snn.network import SpikingNetwork, neurons_of
from srsnn.snn.neurons import IFNeuron
from srsnn.snn.spike_readers import spike_readers

_MAX_QUANTILE_ELEMENTS = 1 << 24  # torch.quantile's input limit; larger inputs are subsampled (seeded)


class _Stop(Exception):
    pass


def _layer_before(net: nn.Module, neuron: IFNeuron) -> str:
    prev = "the input"
    for name, m in net.named_modules():
        if m is neuron:
            return prev
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            prev = f"{name} ({type(m).__name__.replace('Parametrized', '')})"
    return prev


def _percentile(values: torch.Tensor, percentile: float) -> float:
    flat = values.detach().flatten().float()
    if flat.numel() > _MAX_QUANTILE_ELEMENTS:
        g = torch.Generator(device="cpu").manual_seed(0)
        idx = torch.randint(flat.numel(), (_MAX_QUANTILE_ELEMENTS,), generator=g).to(flat.device)
        flat = flat[idx]
    return float(torch.quantile(flat, percentile / 100.0))


Order = Literal["reference", "sequential"]
Amplitude = Literal["one", "threshold"]
ORDERS, AMPLITUDES = get_args(Order), get_args(Amplitude)


_SPIKE_PASS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


def _consumers(net: nn.Sequential) -> dict[IFNeuron, list[nn.Module]]:
    """For ``amplitude="threshold"``: the convs/linears that read each neuron's spikes (``spike_readers``), reached
    through pooling/flatten only (a spike of amplitude theta must arrive at a weight unchanged but for a sum)."""
    found: dict[IFNeuron, list[nn.Module]] = {}
    try:
        readers = spike_readers(net)
    except UserError as err:
        raise ConversionError(f"step 'calibrate': amplitude='threshold': {err}; or use amplitude='one'") from None
    for neuron, paths in readers.items():
        for path in paths:
            bad = next((m for m in path[:-1] if not isinstance(m, _SPIKE_PASS)), None)
            if bad is not None:
                raise ConversionError(
                    f"step 'calibrate': amplitude='threshold' needs every neuron's spikes read by a "
                    f"conv/linear (after pooling/flatten); {type(bad).__name__} follows a neuron: "
                    "use amplitude='one'"
                )
        if not paths:
            raise ConversionError(
                "step 'calibrate': amplitude='threshold' needs a conv/linear after every neuron; use amplitude='one'"
            )
        found[neuron] = [path[-1] for path in paths]
    return found


def check_calibration(calib_steps: int, percentile: float, scale: float, order: str, amplitude: str) -> None:
    if order not in ORDERS:
        raise ConversionError(f"step 'calibrate': order must be one of {ORDERS}, got {order!r}")
    if not 0 < percentile <= 100:
        raise ConversionError(f"step 'calibrate': percentile must be in (0, 100], got {percentile}")
    if calib_steps < 1 or scale <= 0:
        raise ConversionError(f"step 'calibrate': need calib_steps >= 1 and scale > 0, got {calib_steps}, {scale}")
    if amplitude not in AMPLITUDES:
        raise ConversionError(f"step 'calibrate': amplitude must be one of {AMPLITUDES}, got {amplitude!r}")


def _input_percentile(
    snn: SpikingNetwork, neuron: IFNeuron, batches: list[torch.Tensor], calib_steps: int, percentile: float
) -> float:
    """max over batches of the ``percentile`` of ``neuron``'s input over ``calib_steps`` steps, the earlier layers
    spiking at their current thresholds (the forward stops at ``neuron``: later layers cost nothing)."""
    captured: list[float] = []

    def grab(_module, args):
        captured.append(_percentile(args[0], percentile))
        raise _Stop

    handle = neuron.register_forward_pre_hook(grab)
    try:
        for xb in batches:
            try:
                snn(xb, num_steps=calib_steps)
            except _Stop:
                pass
    finally:
        handle.remove()
    return max(captured)


class _ThresholdSetter:
    """Sets a neuron's threshold; with ``consumers`` (amplitude theta) the weights of the layers that read its spikes
    carry theta too, rescaled when the threshold changes."""

    def __init__(self, consumers: Mapping[IFNeuron, list[nn.Module]]):
        self.consumers, self.applied = consumers, {}

    def __call__(self, neuron: IFNeuron, theta: float) -> None:
        neuron.threshold.fill_(theta)
        for layer in self.consumers.get(neuron, []):
            raw_weight(layer).mul_(theta / self.applied.get(neuron, 1.0))
        self.applied[neuron] = theta


@contextlib.contextmanager
def _cumulative_bn(bns: list[nn.Module], train: bool, reset: bool):
    """BatchNorms in ``train`` mode with cumulative-average statistics (momentum None: every calibration pass
    counts alike), reset first if ``reset``; their momenta come back afterwards (their mode: ``module_mode``)."""
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.train(train)
            if reset:
                bn.reset_running_stats()
            bn.momentum = None
        yield
    finally:
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom


def _peak(snn: SpikingNetwork, neuron, batches, calib_steps: int, percentile: float, layer: int) -> float:
    """The ``percentile`` of the neuron's input over the calibration batches; a layer that never gets a positive input
    is refused by name."""
    peak = _input_percentile(snn, neuron, batches, calib_steps, percentile)
    if not peak > 0:
        raise ConversionError(
            f"step 'calibrate': layer {layer} ({type(neuron).__name__} after {_layer_before(snn.net, neuron)}) "
            "receives no positive input on the calibration data, so it can never spike; check the ANN (a dead "
            "layer?) and the calibration data"
        )
    return peak


@torch.no_grad()
def calibrate_thresholds(
    snn: SpikingNetwork,
    batches: Iterable[torch.Tensor],
    calib_steps: int = 100,
    percentile: float = 99.7,
    scale: float = 0.3,
    reset_bn_stats: bool = True,
    order: str = "reference",
    amplitude: str = "one",
) -> list[float]:
    """Step ``calibrate``: set each neuron's threshold from its pre-activations, first layer first.

    ``order="reference"`` (IGITUGraz/RobustSNNConversion, ``main_train.py``): every layer is calibrated with the
    earlier layers at their *unscaled* thresholds, and all thresholds are multiplied by ``scale`` at the end.
    ``order="sequential"``: each layer is scaled before the next one is calibrated.

    BatchNorm runs on batch statistics (over batch x time) while calibrating; its running statistics are then
    re-estimated at the final thresholds over the same batches at ``snn.num_steps`` (cumulative average), so the
    converted SNN is usable in eval mode right away (the reference resets them and re-learns them in fine-tuning,
    which fine-tuning here does too).

    ``amplitude="threshold"``: a spike stands for theta, not 1 — each neuron's threshold is multiplied into the
    weights of the layer that reads its spikes (rate-based conversion, Rueckauer et al. 2017; spikes stay 0/1),
    so the SNN approaches the ANN itself as T grows. It needs the BatchNorms folded first (``convert`` does)."""
    check_calibration(calib_steps, percentile, scale, order, amplitude)
    batches = list(batches)
    if not batches:
        raise ConversionError("step 'calibrate': no calibration batches (is the training set empty?)")
    bns = [m for m in snn.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    consumers = _consumers(snn.net) if amplitude == "threshold" else {}
    if consumers:  # the ANN's statistics stay (spikes of amplitude theta reproduce the ANN's activations)
        reset_bn_stats = False
    set_threshold = _ThresholdSetter(consumers)
    thresholds: list[float] = []
    with module_mode(snn, train=True), _cumulative_bn(bns, train=not consumers, reset=reset_bn_stats):
        try:
            for neuron in neurons_of(snn):
                peak = _peak(snn, neuron, batches, calib_steps, percentile, len(thresholds) + 1)
                theta = max(peak * (scale if order == "sequential" else 1.0), neuron.min_threshold)
                set_threshold(neuron, theta)
                thresholds.append(theta)
            if order == "reference":
                thresholds = [max(t * scale, n.min_threshold) for t, n in zip(thresholds, neurons_of(snn))]
                for t, n in zip(thresholds, neurons_of(snn)):
                    set_threshold(n, t)
            if reset_bn_stats and bns:  # running statistics of the final network (thresholds scaled)
                for bn in bns:
                    bn.reset_running_stats()
                for xb in batches:
                    snn(xb)
        except ConversionError:
            raise
        except Exception as err:
            raise ConversionError(f"step 'calibrate': {err}") from err
    return thresholds
