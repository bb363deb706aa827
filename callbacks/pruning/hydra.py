"""HYDRA (Sehwag et al., NeurIPS 2020): per-weight scores, layer-wise top-k, weights frozen while the scores learn
with the model's own adversarial objective for ``score_epochs``; then the mask is fixed and the weights fine-tuned
(paper: 20 + 30 epochs, fine-tune lr 0.01)."""

from __future__ import annotations

from typing import Optional

from jsonargparse.typing import NonNegativeInt
from lightning.pytorch import Trainer
from torch import nn

from srsnn.pruning.masks import add_mask, get_weight_mask, prunable_layers, raw_weight
from srsnn.types import FractionBelowOne

from ._base import PruningSchedule, _net


class HydraPruning(PruningSchedule):
    """Args:
    sparsity: fraction of pruned weights in every layer, in [0, 1).
    score_epochs: epochs of score training (weights frozen); the remaining epochs fine-tune the weights.
    finetune_lr: learning rate of the weight fine-tuning (paper: 0.01); None keeps the schedule.
    """

    method, label, color = "hydra", "HYDRA", "tab:blue"
    learn_rate = False
    rate_min = 0.0

    def __init__(
        self, sparsity: FractionBelowOne = 0.9, score_epochs: NonNegativeInt = 20, finetune_lr: Optional[float] = 0.01
    ):
        super().__init__(sparsity)
        self.score_epochs, self.finetune_lr = score_epochs, finetune_lr

    def setup(self, trainer, pl_module, stage):
        if stage != "fit":
            return
        net = _net(pl_module)
        for _, m in prunable_layers(net):
            wm = get_weight_mask(m) or add_mask(m)
            if not hasattr(wm, "scores"):
                wm.add_scores(raw_weight(m), keep=1 - self.sparsity, learn_rate=self.learn_rate, rate_min=self.rate_min)
        self._set_phase(net, scoring=True)

    @staticmethod
    def _set_phase(net: nn.Module, scoring: bool) -> None:
        for name, p in net.named_parameters():
            is_score = name.endswith(".scores") or name.endswith(".rate_logit")
            p.requires_grad_(is_score if scoring else not is_score)

    def on_train_epoch_start(self, trainer, pl_module):
        net = _net(pl_module)
        scoring = any(get_weight_mask(m).scored for _, m in prunable_layers(net))
        if trainer.current_epoch == 0 and scoring:
            self.log_sparsity(trainer, pl_module)
        if trainer.current_epoch >= self.score_epochs and scoring:
            self.fix_masks(net)
            self._set_phase(net, scoring=False)
            self._finetune_schedule(trainer)
            self.log_sparsity(trainer, pl_module)
        elif not scoring:
            self._set_phase(net, scoring=False)  # resumed in the fine-tuning phase

    def fix_masks(self, net: nn.Module) -> None:
        for _, m in prunable_layers(net):
            get_weight_mask(m).freeze()

    def _finetune_schedule(self, trainer: Trainer) -> None:
        if self.finetune_lr is None:
            return
        remaining = max(1, trainer.max_epochs - trainer.current_epoch)
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] = self.finetune_lr
        for cfg in trainer.lr_scheduler_configs:
            sched = cfg.scheduler
            sched.base_lrs = [self.finetune_lr] * len(sched.base_lrs)
            sched.last_epoch = 0
            if hasattr(sched, "T_max"):
                sched.T_max = remaining
