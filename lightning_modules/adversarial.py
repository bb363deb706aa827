"""The shared LightningModule: adversarial training objectives, one ``model_step`` for every split.

Objectives (inner maximisation by torchattacks):

* ``standard``: CE(f(x), y)
* ``pgd_at`` (Madry et al., 2018): CE(f(x_adv), y), x_adv from PGD (or R+FGSM with ``inner_attack: rfgsm``)
* ``trades`` (Zhang et al., 2019): CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL term
  by TPGD (``inner_attack: pgd``) or single-step R+FGSM (``inner_attack: rfgsm``, the SNN fine-tuning of the paper)
* ``mart`` (Wang et al., 2020): boosted CE on x_adv + beta * misclassification-weighted KL
(``srsnn.robustness.objectives``;
  set ``beta: 4`` as the reference code does), x_adv from PGD on CE (or R+FGSM)

Validation and test log clean accuracy and ``pgd_acc_single_path``: PGD at ``eval_epsilon`` through the model's
own training gradient path only (a quick model-selection signal, *not* a robustness number: for that see
``callbacks.AttackEvaluation``; needs ``Trainer(inference_mode=False)``, the default of ``train.py``).
"""

from __future__ import annotations

import os
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import Accuracy, MeanMetric

from srsnn.errors import UserError
from srsnn.io.checkpoints import TAG, check_kind
from srsnn.modes import module_mode
from srsnn.pruning.channels import adopt_shapes
from srsnn.pruning.masks import prepare_masks, state_dict_mismatch
from srsnn.robustness.attacks import Eps, check_pixel_range, make_attack, parse_eps
from srsnn.robustness.objectives import InnerAttack, Objective, mart_loss, trades_loss

SPLITS = ("train", "val", "test")


class AdversarialClassifier(L.LightningModule):
    """Base of ``RobustANN`` and ``ConvertedSNN``; subclasses define ``model`` (the nn.Module attacked)."""

    kind = "ann"

    def __init__(
        self,
        objective: Objective = "trades",
        beta: NonNegativeFloat = 2.0,
        epsilon: Eps = "2/255",
        attack_steps: PositiveInt = 10,
        attack_step_size: Optional[float] = None,
        inner_attack: InnerAttack = "pgd",
        eval_epsilon: Optional[Eps] = None,
        eval_steps: PositiveInt = 10,
        val_attack: bool = True,
        optimizer: Optional[OptimizerCallable] = None,
        scheduler: Optional[LRSchedulerCallable] = None,
    ):
        super().__init__()  # option values are checked by their types when train.py parses them
        self.objective, self.beta, self.inner_attack = objective, float(beta), inner_attack
        # extra terms of the training loss that callbacks register (e.g. HARP's rate penalty): name -> () -> Tensor
        # or None; added to the loss (one backward, synchronised under DDP like the rest) and logged as train/<name>
        self.loss_terms: dict = {}
        self.epsilon = parse_eps(epsilon, "model.epsilon")
        self.eval_epsilon = parse_eps(eval_epsilon if eval_epsilon is not None else epsilon, "model.eval_epsilon")
        self.attack_steps, self.attack_step_size, self.eval_steps = attack_steps, attack_step_size, eval_steps
        self.val_attack = val_attack
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.metrics = nn.ModuleDict(
            {
                f"{split}_metrics": nn.ModuleDict(
                    {
                        "loss": MeanMetric(),
                        "acc": Accuracy("multiclass", num_classes=self._num_classes()),
                        "pgd_acc": Accuracy("multiclass", num_classes=self._num_classes()),
                    }
                )
                for split in SPLITS  # "_metrics" suffix: a key "train" would shadow nn.Module.train
            }
        )

    # -- to be provided by subclasses -----------------------------------------------------------
    @property
    def model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _num_classes(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy if self._trainer is not None else None
        if getattr(strategy, "_layer_sync", None) is not None and strategy.root_device.type != "cuda":
            # torch's SyncBatchNorm is CUDA-only; without this check DDP fails deep inside with a traceback
            raise UserError(
                "trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm is CUDA-only); on CPU set "
                "--trainer.sync_batchnorm false (each rank then normalises with its own batch statistics)"
            )
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        loader = {"fit": "train_dataloader", "validate": "val_dataloader", "test": "test_dataloader"}.get(stage)
        batch = next(iter(getattr(dm, loader)()), None) if loader and callable(getattr(dm, loader, None)) else None
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            check_pixel_range(batch[0], f"{type(dm).__name__}.{loader}()")
        classes, shape = getattr(dm, "num_classes", None), getattr(dm, "input_shape", None)
        if not (classes and shape):  # a plain LightningDataModule: one batch says the shape and the labels seen
            if batch is None:
                return
            x, y = batch[0], torch.as_tensor(batch[1])
            shape = shape or tuple(x.shape[1:])
            if not classes and y.numel() and int(y.max()) >= self._num_classes():
                raise UserError(
                    f"the data has labels up to {int(y.max())} but the network ({type(self.model).__name__}) "
                    f"has {self._num_classes()} outputs; set num_classes in model.init_args.net.init_args"
                )
            classes = classes or self._num_classes()
        self.check_fits_data(classes, tuple(shape))

    def check_fits_data(self, num_classes: int, input_shape: tuple) -> None:
        """One clear error when the configured network cannot take this datamodule's images or labels."""
        net = type(self.model).__name__
        if num_classes != self._num_classes():
            raise UserError(
                f"the network ({net}) has {self._num_classes()} outputs but the data has {num_classes} "
                f"classes; set num_classes: {num_classes} in model.init_args.net.init_args"
            )
        try:
            with module_mode(self.model), torch.no_grad():
                p = next(self.model.parameters())
                self.model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
        except RuntimeError as err:
            raise UserError(
                f"the network ({net}) cannot take the data's images of shape {input_shape} "
                f"(check in_channels / input_size in model.init_args.net.init_args): "
                f"{str(err).splitlines()[0][:160]}"
            ) from None

    # -- objectives -----------------------------------------------------------------------------
    def adversarial_examples(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inner maximisation of the training objective (model in eval mode while attacking)."""
        name = {
            ("pgd_at", "pgd"): "pgd",
            ("pgd_at", "rfgsm"): "rfgsm",
            ("mart", "pgd"): "pgd",
            ("mart", "rfgsm"): "rfgsm",
            ("trades", "pgd"): "tpgd",
            ("trades", "rfgsm"): "rfgsm_kl",
        }[(self.objective, self.inner_attack)]
        attack = make_attack(name, self.model, self.epsilon, self.attack_steps, self.attack_step_size)
        with torch.enable_grad():
            return attack(x, y)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.objective == "standard":
            logits = self(x)
            return F.cross_entropy(logits, y), logits
        x_adv = self.adversarial_examples(x, y)
        if self.objective == "pgd_at":
            logits = self(x_adv)
            return F.cross_entropy(logits, y), logits
        logits = self(x)
        loss = (mart_loss if self.objective == "mart" else trades_loss)(logits, self(x_adv), y, self.beta)
        return loss, logits

    # -- one step for every split --------------------------------------------------------------------
    def model_step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        m = self.metrics[f"{split}_metrics"]
        if split == "train":
            loss, logits = self.training_loss(x, y)
            for name, term in self.loss_terms.items():
                value = term()
                if value is not None:
                    loss = loss + value
                    self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=True, sync_dist=True)
            if not torch.isfinite(loss):
                cb = self.trainer.checkpoint_callback if self._trainer is not None else None
                last = getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "")
                kept = (
                    f"The last good checkpoint is kept: {last}."
                    if last and os.path.isfile(last)
                    else "No checkpoint was saved before this point."
                )
                raise UserError(
                    f"the training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                    "Likely cause: a learning rate too high for this network/objective (lower "
                    f"model.optimizer.init_args.lr) or corrupt inputs. {kept}"
                )
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y)
        m["loss"](loss.detach())
        m["acc"](logits.detach(), y)
        self.log(f"{split}/loss", m["loss"], on_step=False, on_epoch=True, prog_bar=split == "train")
        self.log(f"{split}/acc", m["acc"], on_step=False, on_epoch=True, prog_bar=True)
        if split != "train" and (self.val_attack or split == "test") and self.eval_epsilon > 0:
            attack = make_attack("pgd", self.model, self.eval_epsilon, self.eval_steps)
            with torch.enable_grad():
                x_adv = attack(x, y)
            with torch.no_grad():
                m["pgd_acc"](self(x_adv), y)
            self.log(f"{split}/pgd_acc_single_path", m["pgd_acc"], on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self.model_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self.model_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self.model_step(batch, "test")

    # -- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self):
        # all parameters, so that pruning callbacks may toggle requires_grad without rebuilding param groups
        params = list(self.parameters())
        if self.optimizer_factory is None:
            opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
        else:
            opt = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs or 1))
        else:
            sched = self.scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -- checkpoints ------------------------------------------------------------------------------
    channel_pruned = False  # set by callbacks.ChannelPruning: the checkpoint's layer widths differ from the config

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint[TAG] = {"kind": self.kind, "net": self.network_name(), "channel_pruned": self.channel_pruned}
        # the RNG drives attack random starts: restoring it makes a resumed run match an uninterrupted one
        checkpoint[TAG]["rng"] = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def on_train_epoch_start(self) -> None:
        rng, self._resume_rng = getattr(self, "_resume_rng", None), None
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def on_load_checkpoint(self, checkpoint) -> None:
        info = checkpoint.get(TAG, {})
        self._resume_rng = info.get("rng")
        check_kind(
            info.get("kind"), self.kind, "this", f"the config builds {type(self).__name__}: use the matching config"
        )
        if info.get("channel_pruned"):
            adopt_shapes(self, checkpoint["state_dict"])
            self.channel_pruned = True
        # masks and pruning scores are created before Lightning's strict load_state_dict
        prepare_masks(self, checkpoint["state_dict"])
        problem = state_dict_mismatch(self.state_dict(), checkpoint["state_dict"])
        if problem:  # one line naming both sides, instead of torch's load_state_dict traceback
            theirs = info.get("net", "another network")
            raise UserError(
                f"the checkpoint's network ({theirs}) does not fit the network the config builds "
                f"({self.network_name()}): {problem}. Use the config it was trained with (its run "
                "folder's config.yaml) or set model.init_args.net to its network"
            )

    def network_name(self) -> str:
        """The network's class, as checkpoints record it (``net``) to name a mismatch."""
        return type(self.model).__name__
