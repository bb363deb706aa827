"""Reductions over time steps that give a sample the same bits in a batch of any size.

A reduction over the time dimension (``sum(0)``, ``mean(0)``) vectorises across the other dimensions and rounds a
sample's output differently with the size of its batch; elementwise adds in step order do not, so a sample's logits
(and the evaluation's per-sample records) are the same on any process count.
"""

from __future__ import annotations

from typing import Iterable

import torch


def sum_over_steps(outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """o_1 + o_2 + ... + o_T, one elementwise add per step, in step order."""
    total = None
    for o in outputs:
        total = o if total is None else total + o
    return total


def mean_over_steps(outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """(o_1 + ... + o_T) / T, the sum as ``sum_over_steps``."""
    outputs = list(outputs)
    return sum_over_steps(outputs) / len(outputs)
