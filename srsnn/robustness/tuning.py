"""The SNN-specific paths' hyperparameters, chosen on validation samples, never on the test samples.

ASSG's A and HART's gamma each change which samples an attack through the path breaks. Their papers pick them by
search on the test set (Wang et al. ternary-search A in [0.35, 0.49]; Hao et al. sweep gamma over 48 values); here
each grid value runs SA-PGD on validation images at the evaluation's smallest epsilon, and the value that breaks the
most is kept (ties: the published default).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from srsnn.robustness.attacks import SAPGD
from srsnn.robustness.keyed import keyed_random, mix
from srsnn.robustness.paths import padded
from srsnn.snn.gradients import ASSG_A, HART_GAMMA
from srsnn.snn.network import gradient_path, reset_path_state

GRIDS = {"assg": ("A", (0.35, 0.4, ASSG_A, 0.45, 0.49), ASSG_A), "hart": ("gamma", (0.5, HART_GAMMA, 2.0), HART_GAMMA)}


def tune_snn_paths(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    steps: int = 50,
    batch_size: int = 100,
    keys: Optional[list[int]] = None,
    modes: tuple = tuple(GRIDS),
) -> dict:
    """``{"assg": A, "hart": gamma, "broken": {"assg": {A: count}, ...}}`` from this rank's validation samples
    ``x, y`` (``reduce`` sums the counts over DDP ranks, so every rank chooses the same; ``keys``: the samples'
    global indices, which key their random starts, so the choice is the same on any number of processes); ``modes``:
    the paths to tune (those defined for the network)."""
    keys = list(range(len(y))) if keys is None else list(keys)
    model = padded(model)  # a sample's result does not depend on its batch's size (``PaddedRows``)
    out: dict = {"broken": {}}
    out.update({m: GRIDS[m][2] for m in GRIDS})  # a path not tuned keeps its published default
    for mode, (_, grid, default) in ((m, GRIDS[m]) for m in modes if m in GRIDS):  # a path without a grid: as is
        counts = []
        for value in grid:
            broken = 0
            for i in range(0, len(y), batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                attack = SAPGD(model, eps, steps=steps)
                with (
                    gradient_path(model, mode, None, value),
                    torch.enable_grad(),
                    keyed_random(
                        attack,
                        xb,
                        keys[i : i + batch_size],
                        mix("tuning", mode, value),
                        lambda: reset_path_state(model),
                    ),
                ):
                    adv = attack(xb, yb)
                with torch.no_grad():
                    broken += int((model(adv).argmax(1) != yb).sum())
            counts.append(float(broken))
        totals = reduce(torch.tensor(counts, dtype=torch.float64, device=x.device)).tolist()
        best = max(range(len(grid)), key=lambda k: (totals[k], grid[k] == default))
        out[mode] = grid[best]
        out["broken"][mode] = {f"{v:g}": int(c) for v, c in zip(grid, totals)}
    return out
