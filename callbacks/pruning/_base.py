"""The base of every pruning method (``PruningSchedule``) and the network it prunes (``_net``); a private module, so
the package's discovery of methods passes it by."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from srsnn.errors import UserError
from srsnn.pruning.masks import prunable_layers, sparsity_report
from srsnn.pruning.registry import register
from srsnn.types import FractionBelowOne


def _net(pl_module: LightningModule) -> nn.Module:
    net = getattr(pl_module, "model", None)
    if not isinstance(net, nn.Module) or not prunable_layers(net):
        raise UserError(f"{type(pl_module).__name__} has no network with Conv2d/Linear layers to prune")
    return net


class PruningSchedule(Callback):
    """The base of a pruning method: ``sparsity`` and the sparsity log. A subclass that sets ``method`` is registered
    (``srsnn.pruning.registry``) with its ``label`` and ``color``."""

    method: str | None = None
    label: str | None = None
    color: str = "tab:gray"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "method" in vars(cls):
            register(cls.method, cls.label or cls.method, cls.color, f"{cls.__module__}.{cls.__qualname__}")

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
