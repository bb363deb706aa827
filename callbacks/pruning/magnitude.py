"""LWM, least weight magnitude: layer-wise uniform or global, one-shot or gradual with the cubic schedule of Zhu &
Gupta (2017): s_t = s_f * (1 - (1 - (t - t_0) / (t_1 - t_0))^3)."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import nn

from srsnn.errors import UserError
from srsnn.pruning.masks import add_mask, ensure_masks, get_weight_mask, prunable_layers, raw_weight, topk_mask
from srsnn.types import FractionBelowOne

from ._base import PruningSchedule, _net


class MagnitudePruning(PruningSchedule):
    """Args:
    sparsity: final fraction of pruned weights, in [0, 1).
    scope: ``layer`` (uniform per layer, the paper's LWM) or ``global`` (one magnitude threshold).
    start_epoch, end_epoch: one-shot at ``start_epoch`` when ``end_epoch`` is None, else gradual (cubic).
    frequency: prune every ``frequency`` epochs between start and end.
    """

    method, label, color = "lwm", "LWM", "tab:red"

    def __init__(
        self,
        sparsity: FractionBelowOne = 0.9,
        scope: Literal["layer", "global"] = "layer",
        start_epoch: NonNegativeInt = 0,
        end_epoch: Optional[NonNegativeInt] = None,
        frequency: PositiveInt = 1,
    ):
        super().__init__(sparsity)
        if end_epoch is not None and end_epoch < start_epoch:
            raise UserError(f"MagnitudePruning needs end_epoch >= start_epoch, got {end_epoch} < {start_epoch}")
        self.scope, self.start, self.end, self.frequency = scope, start_epoch, end_epoch, frequency

    def target(self, epoch: int) -> Optional[float]:
        """The sparsity to reach at the start of ``epoch`` (None: no change this epoch)."""
        if self.end is None or self.end == self.start:
            return self.sparsity if epoch == self.start else None
        if epoch < self.start or epoch > self.end or (epoch - self.start) % self.frequency:
            return None
        progress = (epoch - self.start) / (self.end - self.start)
        return self.sparsity * (1 - (1 - progress) ** 3)

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            ensure_masks(_net(pl_module))

    def on_train_epoch_start(self, trainer, pl_module):
        s = self.target(trainer.current_epoch)
        if s is None:
            return
        prune_by_magnitude(_net(pl_module), s, self.scope)
        self.log_sparsity(trainer, pl_module)


def prune_by_magnitude(net: nn.Module, sparsity: float, scope: str = "layer") -> None:
    """Keep the largest |w| (already-pruned weights are 0 and stay pruned as the target grows)."""
    layers = [m for _, m in prunable_layers(net)]
    with torch.no_grad():
        if scope == "global":
            mags = torch.cat([(raw_weight(m) * get_weight_mask(m).mask).abs().flatten() for m in layers])
            keep = topk_mask(mags, int(round((1 - sparsity) * mags.numel())))
            offset = 0
            for m in layers:
                n = m.weight.numel()
                add_mask(m, keep[offset : offset + n].view_as(m.weight))
                offset += n
        else:
            for m in layers:
                mag = (raw_weight(m) * get_weight_mask(m).mask).abs().flatten()
                add_mask(m, topk_mask(mag, int(round((1 - sparsity) * mag.numel()))).view_as(m.weight))
