"""Train/eval mode for a block of code, every submodule's own mode restored afterwards."""
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
