"""ANN -> SNN conversion as a fixed sequence of named steps (after SpikingJelly's ann2snn).

Steps (Schmolli et al., CPAL 2025, Stage 2):

1. ``check``      the ANN is an ``nn.Sequential`` of this repo's kind with ReLU slots;
2. ``structure``  deep copy, every ``nn.ReLU`` -> ``IFNeuron`` (nothing else changes);
3. ``masks``      the mask becomes ``M = (W != 0)`` (and the ANN's mask), applied on every forward, frozen;
4. ``calibrate``  thresholds layer by layer from the first, the earlier layers already spiking (at their
                  unscaled thresholds, as the reference code does):
                  V_th^l = scale * max_batches percentile_rho(pre-activations of layer l over T_c steps),
                  clamped >= 0.03 (defaults rho = 99.7, T_c = 100, scale = 0.3, 10 batches); a layer that
                  gets no positive input is an error naming it; BatchNorm runs on batch statistics (over
                  batch x time) and its running statistics are re-estimated on the spikes at the end (paper);
5. ``batchnorm``  kept (paper; re-learned in fine-tuning) or folded into the preceding conv/linear (``bn="fold"``);
6. ``neuron``     ``neuron="if"`` (default, the paper's) keeps the IF neurons; ``neuron="leaky"`` puts snnTorch's
                  ``Leaky`` in every slot (``to_leaky``).

A failing step raises ``ConversionError`` naming the step. Train/eval mode is restored in ``finally``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Literal, Mapping, Union, get_args

import torch
from torch import nn

from srsnn.devices import device_of
from srsnn.io.dotted import import_dotted
from srsnn.pruning.masks import ensure_masks, masks_from_nonzero, prunable_layers, raw_weight, strip_scores
from srsnn.snn.calibration import ConversionError, calibrate_thresholds, check_calibration
from srsnn.snn.native import NativeNet
from srsnn.snn.network import SpikingNetwork
from srsnn.snn.neurons import IFNeuron, untrack
from srsnn.snn.surrogates import Surrogate


def _check_ann(ann: nn.Module) -> None:
    if not isinstance(ann, nn.Sequential):
        raise ConversionError("step 'check': the ANN must be an nn.Sequential (use srsnn.ann.architectures)")
    if any(isinstance(m, IFNeuron) for m in ann.modules()):
        raise ConversionError("step 'check': the network already holds IF neurons: it is converted")
    leaves = [
        (n, m)
        for n, m in ann.named_modules()
        if n and "parametrizations" not in n and (isinstance(m, (nn.Conv2d, nn.Linear)) or not list(m.children()))
    ]  # masked layers have children
    for name, m in leaves:
        kind = type(m).__name__
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)):
            raise ConversionError(
                f"step 'check': layer {name} ({kind}): the max of spike trains is not the max of "
                "rates; use nn.AvgPool2d (or AdaptiveAvgPool2d) and retrain the ANN"
            )
        if type(m).__module__ == nn.ReLU.__module__ and not isinstance(m, nn.ReLU):
            raise ConversionError(
                f"step 'check': layer {name} ({kind}): only nn.ReLU slots become IF neurons; "
                f"replace it by nn.ReLU and retrain the ANN (a final Softmax: remove it, the "
                "readout averages the logits)"
            )
    relus = [k for k, (_, m) in enumerate(leaves) if isinstance(m, nn.ReLU)]
    if not relus:
        raise ConversionError("step 'check': the ANN has no nn.ReLU slot to hold a spiking neuron")
    if not prunable_layers(ann):
        raise ConversionError("step 'check': the ANN has no Conv2d/Linear layer")
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for _, m in leaves[relus[-1] + 1 :]):
        raise ConversionError(
            f"step 'check': nothing reads the spikes of the last ReLU ({leaves[relus[-1]][0]}); "
            "the network must end with a Linear (or conv) readout, e.g. append "
            "nn.Linear(features, num_classes)"
        )


def _replace(module: nn.Module, neuron_kwargs: Mapping[str, Any], device: torch.device) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, IFNeuron(**neuron_kwargs).to(device))  # beside the weights it will read
        else:
            _replace(child, neuron_kwargs, device)


def fused_weights(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mu) * gamma / sqrt(var + eps) + beta`` for a BatchNorm
    (running statistics) after ``layer`` (``torch.nn.utils.fusion``). ``W`` is the stored weight: pruned zeros stay
    0."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    fuse = fuse_conv_bn_weights if isinstance(layer, nn.Conv2d) else fuse_linear_bn_weights
    w, b = fuse(raw_weight(layer), layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return w.detach(), b.detach()


def fold_batchnorm(net: nn.Sequential, strict: bool = True) -> nn.Sequential:
    """Fold every ``BatchNorm`` that directly follows a conv/linear in ``net`` into it (in place; ``fused_weights``).
    Exact in eval mode for whatever statistics the BN holds, so ``convert`` folds *after* calibration, when they are
    the spiking network's (folding the ANN's statistics mis-scales every bias: spikes are 0/1, not ANN activations).
    ``strict=False`` leaves the BatchNorms it cannot fold (pre-activation blocks) in place."""
    mods = list(net.named_children())
    for (_, a), (bn_name, b) in zip(mods, mods[1:]):
        if isinstance(b, nn.modules.batchnorm._BatchNorm) and isinstance(a, (nn.Conv2d, nn.Linear)):
            w, bias = fused_weights(a, b)
            with torch.no_grad():
                raw_weight(a).copy_(w)
            a.bias = nn.Parameter(bias.clone())
            setattr(net, bn_name, nn.Identity())
    if strict and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ConversionError(
            "step 'batchnorm': bn='fold' needs every BatchNorm right after a conv/linear "
            "(pre-activation ResNets put BN first); use bn='keep'"
        )
    return net


def spiking_structure(
    ann: nn.Module,
    reset: str = "zero",
    surrogate: Union[str, Mapping[str, Any], Surrogate] = "triangular",
    min_threshold: float = 0.03,
    bn: str = "keep",
    detach_reset: bool = False,
    v_init: float = 0.0,
) -> nn.Sequential:
    """Steps ``check`` and ``structure`` (+ all-ones masks, + BN folding): a converted copy of ``ann``
    whose weights are still the ANN's and whose thresholds are not yet calibrated."""
    _check_ann(ann)
    if bn not in ("keep", "fold", "fold_where_possible"):
        raise ConversionError(f"bn must be 'keep' or 'fold', got {bn!r}")
    snn = copy.deepcopy(ann)
    try:
        strip_scores(snn)  # HYDRA/HARP scores are training state of the ANN, not part of the SNN
        if bn != "keep":
            fold_batchnorm(snn, strict=bn == "fold")
        _replace(
            snn,
            dict(
                reset=reset, surrogate=surrogate, min_threshold=min_threshold, detach_reset=detach_reset, v_init=v_init
            ),
            device_of(snn),
        )
        ensure_masks(snn)
    except ConversionError:
        raise
    except Exception as err:
        raise ConversionError(f"step 'structure': {err}") from err
    return snn


BatchNorm = Literal["keep", "fold"]  # kept as a layer of the SNN, or folded into the conv before it


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A coherent set of conversion settings (after SpikingJelly's ann2snn recipes), checked when it is made.

    reset, v_init, min_threshold: the IF neuron (``srsnn.snn.neurons.IFNeuron``: hard ``zero`` or ``subtract`` reset;
        the membrane starts at ``v_init * theta``; thresholds clamped >= ``min_threshold``).
    percentile, scale, calib_steps, order: thresholds, ``theta = scale * percentile(pre-activations over
        calib_steps steps)`` (``calibrate_thresholds``).
    bn: ``keep`` (re-estimated on spikes) or ``fold`` (into the conv/linear after calibration).
    amplitude: ``one`` (a spike is 1) or ``threshold`` (a spike stands for theta, multiplied into the layer that
        reads it: rate-based conversion, Rueckauer et al. 2017; needs ``bn: fold``).

    Built-in (``RECIPES``): ``paper`` (the defaults: the reference code, made for adversarial fine-tuning after it)
    and ``rate`` (rate-based conversion, the best accuracy without fine-tuning). Your own: a ``Recipe(...)`` (or
    ``dataclasses.replace(RECIPES["rate"], percentile=99.99)``) in a module, named by its dotted path."""

    reset: str = "zero"
    v_init: float = 0.0
    min_threshold: float = 0.03
    percentile: float = 99.7
    scale: float = 0.3
    calib_steps: int = 100
    order: str = "reference"
    bn: str = "keep"
    amplitude: str = "one"

    def __post_init__(self):
        # reset, v_init and min_threshold are the neuron's: IFNeuron checks them when the structure is built
        if self.bn not in get_args(BatchNorm):
            raise ConversionError(f"bn must be one of {get_args(BatchNorm)}, got {self.bn!r}")
        check_calibration(self.calib_steps, self.percentile, self.scale, self.order, self.amplitude)
        if self.amplitude == "threshold" and self.bn != "fold":
            raise ConversionError(
                "amplitude='threshold' folds the ANN's BatchNorms (keeping their statistics where "
                "they cannot be folded): set bn='fold'"
            )


RECIPES = {
    "paper": Recipe(),
    # rates round instead of floor (v_init = theta / 2) and a spike carries theta: the ANN's function as T grows
    "rate": Recipe(reset="subtract", v_init=0.5, percentile=99.9, scale=1.0, bn="fold", amplitude="threshold"),
}


def recipe_from(recipe: Union[str, Recipe] = "paper", **overrides: Any) -> Recipe:
    """A ``Recipe`` from a name of ``RECIPES``, the dotted path of one (``mypkg.conversion.MY_RECIPE``) or itself,
    with the ``overrides`` that are not None applied (and the result checked again)."""
    if isinstance(recipe, str) and recipe in RECIPES:
        recipe = RECIPES[recipe]
    elif isinstance(recipe, str):
        try:
            found = import_dotted(recipe)
        except (ImportError, AttributeError, ValueError):
            found = None
        if not isinstance(found, Recipe):
            raise ConversionError(
                f"unknown conversion recipe {recipe!r}: use one of {sorted(RECIPES)} or the dotted "
                "path of a srsnn.snn.conversion.Recipe (e.g. mypkg.conversion.MY_RECIPE)"
            )
        recipe = found
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConversionError(f"not conversion settings: {unknown}; a Recipe has {sorted(fields)}")
    changed = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(recipe, **changed) if changed else recipe


def convert(
    ann: nn.Module,
    calib_batches: Iterable[torch.Tensor],
    num_steps: int = 8,
    recipe: Union[str, Recipe] = "paper",
    surrogate: Union[str, Mapping[str, Any], Surrogate] = "triangular",
    encoding: str = "direct",
    detach_reset: bool = False,
    neuron: Neuron = "if",
    beta: float = 0.9,
    **settings: Any,
) -> nn.Module:
    """All five steps with a ``Recipe`` (``recipe_from(recipe, **settings)``, e.g. ``recipe="rate"`` or
    ``percentile=99.9``): a calibrated ``SpikingNetwork`` with the ANN's weights and frozen masks. With ``bn="fold"``
    the BatchNorms are kept through calibration (their statistics re-estimated on spikes) and folded after it;
    with ``amplitude="threshold"`` the ANN's BatchNorms are folded first where they follow a conv/linear and kept
    with the ANN's statistics elsewhere (pre-activation blocks): the SNN then computes the ANN's function in the
    rate limit. ``neuron="leaky"``: the calibrated network with snnTorch ``Leaky`` neurons of leak ``beta``
    (``to_leaky``), returned as a ``NativeNet``."""
    if neuron not in get_args(Neuron):
        raise ConversionError(f"step 'neuron': neuron must be one of {get_args(Neuron)}, got {neuron!r}")
    r = recipe_from(recipe, **settings)
    net = spiking_structure(
        ann,
        reset=r.reset,
        surrogate=surrogate,
        min_threshold=r.min_threshold,
        bn="fold_where_possible" if r.amplitude == "threshold" else "keep",
        detach_reset=detach_reset,
        v_init=r.v_init,
    )
    try:
        masks_from_nonzero(net)
    except Exception as err:
        raise ConversionError(f"step 'masks': {err}") from err
    snn = SpikingNetwork(net, num_steps=num_steps, encoding=encoding)
    calibrate_thresholds(snn, calib_batches, r.calib_steps, r.percentile, r.scale, order=r.order, amplitude=r.amplitude)
    if r.bn == "fold" and r.amplitude == "one":
        try:
            fold_batchnorm(snn.net)
        except ConversionError:
            raise
        except Exception as err:
            raise ConversionError(f"step 'batchnorm': {err}") from err
    return to_leaky(snn, beta) if neuron == "leaky" else snn


Neuron = Literal["if", "leaky"]


def to_leaky(snn: SpikingNetwork, beta: float = 0.9) -> NativeNet:
    """Step ``neuron``: every IF neuron of a calibrated ``snn`` replaced by snnTorch's ``Leaky``,

        u_t = beta u_{t-1} + x_t,  s_t = 1[u_t > theta],  reset (zero or subtract) in the same step,

    with the IF neuron's threshold theta, reset and surrogate, evaluated as is (no leak compensation: with beta < 1 a
    neuron needs more input to reach theta than its IF counterpart, so rates, and accuracy, fall as beta falls;
    beta = 1 is the IF neuron but for firing at u > theta instead of u >= theta). The network runs step by step and
    is an snnTorch SNN for the evaluation (``NativeNet``: its gradient paths, readout of the logits)."""
    import snntorch

    if not 0 < float(beta) <= 1:
        raise ConversionError(f"step 'neuron': the leak beta must be in (0, 1], got {beta!r}")
    for name, n in [(k, m) for k, m in snn.net.named_modules() if isinstance(m, IFNeuron)]:
        leaky = snntorch.Leaky(
            beta=float(beta),
            threshold=float(n.effective_threshold().detach()),
            spike_grad=n.spike_grad,
            init_hidden=True,
            reset_mechanism=n.reset_mode,
            reset_delay=False,
        )
        untrack(leaky)
        parent, _, leaf = name.rpartition(".")
        setattr(snn.net.get_submodule(parent) if parent else snn.net, leaf, leaky)
    return NativeNet(SpikingNetwork(snn.net, snn.num_steps, snn.encoding), readout="logits")
