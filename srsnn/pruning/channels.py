"""Adopt the layer widths of a channel-pruned state dict (torch-pruning shrinks layers in place)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def _weight_shape(sd: Mapping[str, torch.Tensor], name: str):
    for key in (f"{name}.weight", f"{name}.parametrizations.weight.original"):
        if key in sd:
            return tuple(sd[key].shape)
    return None


def adopt_shapes(net: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> int:
    """Replace every Conv2d / Linear / BatchNorm whose weight shape differs from ``state_dict`` by a fresh
    layer of the checkpoint's shape (same kernel, stride, padding, bias). Returns how many were replaced."""
    replaced = 0
    for name, mod in list(net.named_modules()):
        shape = _weight_shape(state_dict, prefix + name)
        if shape is None or not isinstance(mod, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            continue
        if isinstance(mod, nn.Conv2d) and shape != tuple(mod.weight.shape):
            new = nn.Conv2d(
                shape[1] * mod.groups,
                shape[0],
                mod.kernel_size,
                mod.stride,
                mod.padding,
                mod.dilation,
                mod.groups,
                bias=mod.bias is not None,
            )
        elif isinstance(mod, nn.Linear) and shape != tuple(mod.weight.shape):
            new = nn.Linear(shape[1], shape[0], bias=mod.bias is not None)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and shape[0] != mod.num_features:
            new = type(mod)(shape[0], mod.eps, mod.momentum, mod.affine, mod.track_running_stats)
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)
        replaced += 1
    return replaced
