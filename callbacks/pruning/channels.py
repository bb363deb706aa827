"""Structured pruning with torch-pruning: whole channels removed, so the network really shrinks."""

from __future__ import annotations

import time
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from srsnn.devices import device_of
from srsnn.errors import UserError
from srsnn.modes import module_mode
from srsnn.types import FractionBelowOne

from ._base import PruningSchedule, _net


class ChannelPruning(PruningSchedule):
    """Structured pruning with torch-pruning: removes a fraction of every layer's output channels (the
    classifier's outputs are kept), one-shot at the start of ``fit``; the remaining epochs fine-tune.

    Args:
        sparsity: fraction of channels removed per layer.
        importance: ``l1`` / ``l2`` (torch-pruning's ``MagnitudeImportance``) or ``bn_scale``.
    """

    method, label, color = "channels", "channels", "tab:purple"

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
