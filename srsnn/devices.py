"""Where a network lives: tensors a function creates go to the device of the module or data they meet."""

from __future__ import annotations

import itertools

import torch
from torch import nn


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module that holds neither."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return first.device if first is not None else torch.device("cpu")
