"""Pruning schedules as callbacks: put one in ``trainer.callbacks`` of a ``RobustANN`` run.

* ``MagnitudePruning`` — least weight magnitude (LWM), layer-wise uniform or global, one-shot or gradual
  with the cubic schedule of Zhu & Gupta (2017): s_t = s_f * (1 - (1 - (t - t_0) / (t_1 - t_0))^3).
* ``HydraPruning`` — HYDRA (Sehwag et al., NeurIPS 2020): per-weight scores, layer-wise top-k, weights frozen
  while the scores learn with the model's own adversarial objective for ``score_epochs``; then the mask is
  fixed and the weights fine-tuned (paper: 20 + 30 epochs, fine-tune lr 0.01).
* ``HarpPruning`` — HARP (Zhao & Wressnegger, ICLR 2023): HYDRA plus a learned keep ratio per layer (at least
  ``alpha`` times the global one) and, inside the training loss, the hinge ``gamma_e * max(r / (1 - kappa) - 1, 0)``
  on the kept fraction r with a weight growing per epoch, ``gamma_e = (e + 1) gamma``; at the switch the ratios
  are projected so the global sparsity is exact.
* ``ChannelPruning`` — structured: torch-pruning removes whole channels, so the network really shrinks.

All log per-layer and global sparsity (``sparsity/<layer>``, ``sparsity/global``) at every change.
"""

from __future__ import annotations

import time
from typing import Literal, Optional

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from srsnn.devices import device_of
from srsnn.errors import UserError
from srsnn.modes import module_mode
from srsnn.pruning.masks import (
    add_mask,
    ensure_masks,
    get_weight_mask,
    prunable_layers,
    raw_weight,
    sparsity_report,
    topk_mask,
)
from srsnn.types import FractionBelowOne


def _net(pl_module: LightningModule) -> nn.Module:
    net = getattr(pl_module, "model", None)
    if not isinstance(net, nn.Module) or not prunable_layers(net):
        raise UserError(f"{type(pl_module).__name__} has no network with Conv2d/Linear layers to prune")
    return net


class _Pruning(Callback):
    def __init__(self, sparsity: FractionBelowOne):
        self.sparsity = float(sparsity)  # 0.9 = 90 % of the weights removed

    def log_sparsity(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        report = sparsity_report(_net(pl_module))
        metrics = {f"sparsity/{k}": v for k, v in report.items()}
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        rank_zero_info(
            f"[{type(self).__name__}] epoch {trainer.current_epoch}: global sparsity "
            f"{report['global']:.4f} (" + ", ".join(f"{k} {v:.3f}" for k, v in report.items() if k != "global") + ")"
        )
        return report


class MagnitudePruning(_Pruning):
    """Args:
    sparsity: final fraction of pruned weights, in [0, 1).
    scope: ``layer`` (uniform per layer, the paper's LWM) or ``global`` (one magnitude threshold).
    start_epoch, end_epoch: one-shot at ``start_epoch`` when ``end_epoch`` is None, else gradual (cubic).
    frequency: prune every ``frequency`` epochs between start and end.
    """

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


class HydraPruning(_Pruning):
    """Args:
    sparsity: fraction of pruned weights in every layer, in [0, 1).
    score_epochs: epochs of score training (weights frozen); the remaining epochs fine-tune the weights.
    finetune_lr: learning rate of the weight fine-tuning (paper: 0.01); None keeps the schedule.
    """

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


class HarpPruning(HydraPruning):
    """Args: as ``HydraPruning`` plus ``gamma`` (base weight of the hinge regulariser, HARP's default 1.0; it
    grows as (epoch + 1) gamma) and ``alpha`` (every layer keeps at least ``alpha * (1 - sparsity)`` of its
    weights; HARP's default 0.1). The regulariser is a term of the training loss (logged as
    ``train/harp_rate_penalty``), so it is optimised with the loss and synchronised under DDP like it."""

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


class ChannelPruning(_Pruning):
    """Structured pruning with torch-pruning: removes a fraction of every layer's output channels (the
    classifier's outputs are kept), one-shot at the start of ``fit``; the remaining epochs fine-tune.

    Args:
        sparsity: fraction of channels removed per layer.
        importance: ``l1`` / ``l2`` (torch-pruning's ``MagnitudeImportance``) or ``bn_scale``.
    """

    def __init__(self, sparsity: FractionBelowOne = 0.5, importance: Literal["l1", "l2", "bn_scale"] = "l2"):
        super().__init__(sparsity)
        self.importance = importance
        self.report: dict[str, float] = {}

    def setup(self, trainer, pl_module, stage):
        if stage != "fit" or trainer.ckpt_path:
            return
        import torch_pruning as tp

        net = _net(pl_module)
        dm = trainer.datamodule
        example = torch.rand(2, *dm.input_shape, device=device_of(net)) if dm is not None else None
        if example is None:
            raise UserError("ChannelPruning needs a datamodule with input_shape")
        imp = (
            tp.importance.BNScaleImportance()
            if self.importance == "bn_scale"
            else tp.importance.MagnitudeImportance(p=1 if self.importance == "l1" else 2)
        )
        classifier = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        with module_mode(net, train=None):  # torch-pruning's counting leaves modules in eval mode
            macs0, params0 = tp.utils.count_ops_and_params(net, example)
            t0 = _latency(net, dm.input_shape)
            pruner = tp.pruner.MetaPruner(
                net, example, importance=imp, pruning_ratio=self.sparsity, ignored_layers=[classifier]
            )
            pruner.step()
            macs1, params1 = tp.utils.count_ops_and_params(net, example)
            t1 = _latency(net, dm.input_shape)
        # torch-pruning's count_ops_and_params already counts multiply-accumulates of one example (not FLOPs)
        self.report = {
            "params_before": params0,
            "params_after": params1,
            "macs_before": macs0,
            "macs_after": macs1,
            "cpu_latency_ratio": t0 / t1,
        }
        rank_zero_info(
            f"[ChannelPruning] params {params0:,} -> {params1:,} ({params0 / params1:.2f}x), "
            f"MACs {macs0:,.0f} -> {macs1:,.0f} ({macs0 / macs1:.2f}x), "
            f"CPU latency (batch 64) {t0 * 1e3:.2f} ms -> {t1 * 1e3:.2f} ms ({t0 / t1:.2f}x faster)"
        )
        pl_module.channel_pruned = True

    def on_train_start(self, trainer, pl_module):
        if self.report and trainer.logger is not None:
            trainer.logger.log_metrics({f"channels/{k}": float(v) for k, v in self.report.items()}, step=0)


@torch.no_grad()
def _latency(net: nn.Module, input_shape, batch: int = 64, repeats: int = 5) -> float:
    x = torch.rand(batch, *input_shape, device=device_of(net))
    best = float("inf")
    with module_mode(net):
        net(x)
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t)
    return best
