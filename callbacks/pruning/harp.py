"""HARP (Zhao & Wressnegger, ICLR 2023): HYDRA plus a learned keep ratio per layer (at least ``alpha`` times the
global one) and, inside the training loss, the hinge ``gamma_e * max(r / (1 - kappa) - 1, 0)`` on the kept fraction r
with a weight growing per epoch, ``gamma_e = (e + 1) gamma``; at the switch the ratios are projected so the global
sparsity is exact."""

from __future__ import annotations

from typing import Optional

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt
from torch import nn

from srsnn.pruning.masks import get_weight_mask, prunable_layers
from srsnn.types import FractionBelowOne

from ._base import _net
from .hydra import HydraPruning


class HarpPruning(HydraPruning):
    """Args: as ``HydraPruning`` plus ``gamma`` (base weight of the hinge regulariser, HARP's default 1.0; it
    grows as (epoch + 1) gamma) and ``alpha`` (every layer keeps at least ``alpha * (1 - sparsity)`` of its
    weights; HARP's default 0.1). The regulariser is a term of the training loss (logged as
    ``train/harp_rate_penalty``), so it is optimised with the loss and synchronised under DDP like it."""

    method, label, color = "harp", "HARP", "tab:green"
    learn_rate = True

    def __init__(
        self,
        sparsity: FractionBelowOne = 0.9,
        score_epochs: NonNegativeInt = 20,
        finetune_lr: Optional[float] = 0.01,
        gamma: NonNegativeFloat = 1.0,
        alpha: ClosedUnitInterval = 0.1,
    ):
        super().__init__(sparsity, score_epochs, finetune_lr)
        self.gamma, self.alpha = gamma, alpha

    @property
    def rate_min(self) -> float:
        return self.alpha * (1 - self.sparsity)

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            pl_module.loss_terms["harp_rate_penalty"] = lambda: self.penalty(_net(pl_module), trainer.current_epoch)

    def penalty(self, net: nn.Module, epoch: int) -> Optional[torch.Tensor]:
        """``(epoch + 1) gamma max(sum_l r_l n_l / (N (1 - kappa)) - 1, 0)`` while the scores train, else None."""
        masks = [(get_weight_mask(m), m.weight.numel()) for _, m in prunable_layers(net)]
        if not all(wm is not None and wm.scored for wm, _ in masks):
            return None
        kept = sum(wm.keep_ratio() * n for wm, n in masks) / sum(n for _, n in masks)
        return (epoch + 1) * self.gamma * torch.relu(kept / (1 - self.sparsity) - 1)

    def fix_masks(self, net: nn.Module) -> None:
        """Project the learned per-layer ratios onto the exact global budget, then fix the top-k masks."""
        layers = [(get_weight_mask(m), m.weight.numel()) for _, m in prunable_layers(net)]
        ratios = torch.tensor([float(wm.keep_ratio().detach()) for wm, _ in layers])
        sizes = torch.tensor([n for _, n in layers], dtype=torch.float64)
        budget = round((1 - self.sparsity) * float(sizes.sum()))

        def counts(c: float) -> torch.Tensor:
            return (ratios.double() * c).clamp(self.rate_min, 1.0).mul(sizes).round().clamp(min=1)

        lo, hi = 0.0, 1.0 / max(float(ratios.min()), 1e-6)
        for _ in range(100):  # bisection on a common scale c: sum_l round(clamp(c * r_l) * n_l) = budget
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if counts(mid).sum() < budget else (lo, mid)
        k = counts(hi)
        diff = int(budget - k.sum())
        order = torch.argsort(sizes, descending=True)  # put any rounding remainder in the largest layers
        for i in order.tolist():
            if diff == 0:
                break
            step = max(-int(k[i]) + 1, min(diff, int(sizes[i] - k[i])))
            k[i] += step
            diff -= step
        for (wm, _), ki in zip(layers, k.tolist()):
            wm.freeze(int(ki))
