"""ANN -> SNN conversion as a fixed sequence of named steps (after SpikingJelly's ann2snn).

Steps (Schmolli et al., CPAL 2025, Stage 2):

1. ``check``      the ANN is an ``nn.Sequential`` of this repo's kind with ReLU slots;
2. ``structure``  deep copy, every ``nn.ReLU`` -> ``IFNeuron``, residual merges -> trainable convex sums;
3. ``masks``      the mask becomes ``M = (W != 0)`` (and the ANN's mask), applied on every forward, frozen;
4. ``batchnorm``  kept with statistics over batch x time and running statistics reset (paper), or folded
                  into the preceding conv/linear (``bn="fold"``);
5. ``calibrate``  thresholds layer by layer from the first, the earlier layers already spiking (at their
                  unscaled thresholds, as the reference code does):
                  V_th^l = scale * max_batches percentile_rho(pre-activations of layer l over T_c steps),
                  clamped >= 0.03 (defaults rho = 99.7, T_c = 100, scale = 0.3, 10 batches); a layer that
                  gets no positive input is an error naming it.

A failing step raises ``ConversionError`` naming the step. Train/eval mode is restored in ``finally``.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Optional, Union

import torch
from torch import nn

from .architectures import Merge
from .errors import UserError
from .masks import ensure_masks, masks_from_nonzero, prunable_layers, raw_weight, strip_scores
from .neurons import IFNeuron
from .snn import SpikingNetwork, neurons_of
from .surrogates import Surrogate

_MAX_QUANTILE_ELEMENTS = 1 << 24  # torch.quantile's input limit; larger inputs are subsampled (seeded)


class ConversionError(UserError):
    """A conversion step failed; the message names the step."""


class _Stop(Exception):
    pass


def _check_ann(ann: nn.Module) -> None:
    if not isinstance(ann, nn.Sequential):
        raise ConversionError("step 'check': the ANN must be an nn.Sequential (use nets.architectures)")
    if any(isinstance(m, IFNeuron) for m in ann.modules()):
        raise ConversionError("step 'check': the network already holds IF neurons: it is converted")
    if not any(isinstance(m, nn.ReLU) for m in ann.modules()):
        raise ConversionError("step 'check': the ANN has no nn.ReLU slot to hold a spiking neuron")
    if not prunable_layers(ann):
        raise ConversionError("step 'check': the ANN has no Conv2d/Linear layer")


def _replace(module: nn.Module, neuron_kwargs: Mapping[str, Any]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, IFNeuron(**neuron_kwargs))
        else:
            if isinstance(child, Merge):
                child.make_convex()
            _replace(child, neuron_kwargs)


def fold_batchnorm(net: nn.Sequential) -> nn.Sequential:
    """Fold every ``BatchNorm`` that directly follows a conv/linear in ``net`` into it (in place):
    ``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mu) * gamma / sqrt(var + eps) + beta``."""
    mods = list(net.named_children())
    for (_, a), (bn_name, b) in zip(mods, mods[1:]):
        if isinstance(b, nn.modules.batchnorm._BatchNorm) and isinstance(a, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                k = b.weight / torch.sqrt(b.running_var + b.eps)
                w = raw_weight(a)
                w.mul_(k.view(-1, *([1] * (w.dim() - 1))))
                bias = a.bias if a.bias is not None else torch.zeros_like(b.running_mean)
                new_bias = (bias - b.running_mean) * k + b.bias
                a.bias = nn.Parameter(new_bias.clone())
            setattr(net, bn_name, nn.Identity())
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ConversionError("step 'batchnorm': bn='fold' needs every BatchNorm right after a conv/linear "
                              "(pre-activation ResNets put BN first); use bn='keep'")
    return net


def spiking_structure(
    ann: nn.Module,
    reset: str = "zero",
    surrogate: Union[str, Mapping[str, Any], Surrogate] = "triangular",
    min_threshold: float = 0.03,
    bn: str = "keep",
    detach_reset: bool = False,
) -> nn.Sequential:
    """Steps ``check`` and ``structure`` (+ all-ones masks, + BN folding): a converted copy of ``ann``
    whose weights are still the ANN's and whose thresholds are not yet calibrated."""
    _check_ann(ann)
    if bn not in ("keep", "fold"):
        raise ConversionError(f"bn must be 'keep' or 'fold', got {bn!r}")
    snn = copy.deepcopy(ann)
    try:
        strip_scores(snn)  # HYDRA/HARP scores are training state of the ANN, not part of the SNN
        if bn == "fold":
            fold_batchnorm(snn)
        _replace(snn, dict(reset=reset, surrogate=surrogate, min_threshold=min_threshold, detach_reset=detach_reset))
        ensure_masks(snn)
    except ConversionError:
        raise
    except Exception as err:
        raise ConversionError(f"step 'structure': {err}") from err
    return snn


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


ORDERS = ("reference", "sequential")


@torch.no_grad()
def calibrate_thresholds(
    snn: SpikingNetwork,
    batches: Iterable[torch.Tensor],
    calib_steps: int = 100,
    percentile: float = 99.7,
    scale: float = 0.3,
    reset_bn_stats: bool = True,
    order: str = "reference",
) -> list[float]:
    """Step ``calibrate``: set each neuron's threshold from its pre-activations, first layer first.

    ``order="reference"`` (IGITUGraz/RobustSNNConversion, ``main_train.py``): every layer is calibrated with the
    earlier layers at their *unscaled* thresholds, and all thresholds are multiplied by ``scale`` at the end.
    ``order="sequential"``: each layer is scaled before the next one is calibrated.

    BatchNorm runs on batch statistics (over batch x time) while calibrating; its running statistics are then
    re-estimated at the final thresholds over the same batches at ``snn.num_steps`` (cumulative average), so the
    converted SNN is usable in eval mode right away (the reference resets them and re-learns them in fine-tuning,
    which fine-tuning here does too)."""
    if order not in ORDERS:
        raise ConversionError(f"step 'calibrate': order must be one of {ORDERS}, got {order!r}")
    if not 0 < percentile <= 100:
        raise ConversionError(f"step 'calibrate': percentile must be in (0, 100], got {percentile}")
    if calib_steps < 1 or scale <= 0:
        raise ConversionError(f"step 'calibrate': need calib_steps >= 1 and scale > 0, got {calib_steps}, {scale}")
    batches = list(batches)
    if not batches:
        raise ConversionError("step 'calibrate': no calibration batches (is the training set empty?)")
    bns = [m for m in snn.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = {m: m.training for m in snn.modules()}
    momenta = [bn.momentum for bn in bns]
    thresholds: list[float] = []
    try:
        snn.train()
        for bn in bns:
            if reset_bn_stats:
                bn.reset_running_stats()
            bn.momentum = None  # cumulative average over all calibration passes
        for neuron in neurons_of(snn):
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
            if not max(captured) > 0:
                raise ConversionError(f"step 'calibrate': layer {len(thresholds) + 1} ({type(neuron).__name__} after "
                                      f"{_layer_before(snn.net, neuron)}) receives no positive input on the calibration "
                                      "data, so it can never spike; check the ANN (a dead layer?) and the calibration data")
            theta = max(max(captured) * (scale if order == "sequential" else 1.0), neuron.min_threshold)
            neuron.threshold.fill_(theta)
            thresholds.append(theta)
        if order == "reference":
            thresholds = [max(t * scale, n.min_threshold) for t, n in zip(thresholds, neurons_of(snn))]
            for t, n in zip(thresholds, neurons_of(snn)):
                n.threshold.fill_(t)
        if reset_bn_stats and bns:  # running statistics of the final network (thresholds scaled)
            for bn in bns:
                bn.reset_running_stats()
            for xb in batches:
                snn(xb)
    except ConversionError:
        raise
    except Exception as err:
        raise ConversionError(f"step 'calibrate': {err}") from err
    finally:
        for m, was_training in modes.items():
            m.train(was_training)
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom
    return thresholds


def convert(
    ann: nn.Module,
    calib_batches: Iterable[torch.Tensor],
    num_steps: int = 8,
    calib_steps: int = 100,
    percentile: float = 99.7,
    scale: float = 0.3,
    reset: str = "zero",
    surrogate: Union[str, Mapping[str, Any], Surrogate] = "triangular",
    min_threshold: float = 0.03,
    bn: str = "keep",
    encoding: str = "direct",
    detach_reset: bool = False,
    order: str = "reference",
) -> SpikingNetwork:
    """All five steps: a calibrated ``SpikingNetwork`` with the ANN's weights and frozen masks."""
    net = spiking_structure(ann, reset=reset, surrogate=surrogate, min_threshold=min_threshold, bn=bn,
                            detach_reset=detach_reset)
    try:
        masks_from_nonzero(net)
    except Exception as err:
        raise ConversionError(f"step 'masks': {err}") from err
    snn = SpikingNetwork(net, num_steps=num_steps, encoding=encoding)
    calibrate_thresholds(snn, calib_batches, calib_steps, percentile, scale, reset_bn_stats=(bn == "keep"), order=order)
    return snn
