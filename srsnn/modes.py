"""Train/eval mode and frozen parameters for a block of code, every module's own settings restored afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from torch import nn


@contextlib.contextmanager
def module_mode(module: nn.Module, train: Optional[bool] = False) -> Iterator[nn.Module]:
    """``module.train(train)`` inside the block (eval by default; ``None``: left as it is, for code that changes
    modes itself); afterwards, even after an error, each submodule is back in the mode it had (not all in the
    parent's: e.g. a BatchNorm kept in eval inside a training net)."""
    modes = {m: m.training for m in module.modules()}
    try:
        if train is not None:
            module.train(train)
        yield module
    finally:
        for m, was in modes.items():
            m.train(was)


@contextlib.contextmanager
def frozen_parameters(*modules: Optional[nn.Module]) -> Iterator[None]:
    """No parameter of ``modules`` requires a gradient inside the block; each one's flag is restored afterwards.
    An attack needs dL/dx only: frozen weights spare the autograd graph of every weight (masks, thresholds) and
    the neurons' dL/dtheta passes, and dL/dx comes out the same."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
