"""Stages 2-3: the ANN converted to an SNN of IF neurons (``validate``), adversarially fine-tuned (``fit``).

Fine-tuning (Schmolli et al., CPAL 2025, Stage 3): CE(f(x), y) + beta * KL(f(x) || f(x_adv)), beta = 2, with
the single-step R+FGSM attack on the KL term (eps = 2/255, alpha = 1/255), BPTT with the triangular
surrogate (gamma = 1). Weights (masked: pruned entries stay exactly zero), BN affine parameters and
thresholds are trained; masks are frozen buffers.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Mapping, Optional, Union

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from srsnn.devices import device_of
from srsnn.errors import UserError
from srsnn.io.checkpoints import load_network
from srsnn.pruning.masks import prunable_layers, raw_weight
from srsnn.robustness.objectives import InnerAttack, Objective
from srsnn.snn.calibration import Amplitude, Order
from srsnn.snn.conversion import BatchNorm, convert, recipe_from, spiking_structure
from srsnn.snn.network import Encoding, Schedule, SpikingNetwork, record_spikes
from srsnn.snn.neurons import Reset
from srsnn.types import Percentile

from .adversarial import AdversarialClassifier
from .robust_ann import _count_classes

log = logging.getLogger("lightning.pytorch").getChild("conversion")  # printed by every rank, as Lightning's info


def calibration_images(datamodule, num_batches: int, batch_size: int) -> list[torch.Tensor]:
    """``num_batches`` batches of ``batch_size`` training images: the datamodule's own ``calibration_batches``
    (deterministic, no augmentation) when it has one, else the first images of ``train_dataloader()`` (any
    LightningDataModule)."""
    if datamodule is None:
        raise UserError("conversion needs training images for threshold calibration: pass a datamodule (--data ...)")
    if callable(getattr(datamodule, "calibration_batches", None)):
        return datamodule.calibration_batches(num_batches, batch_size)
    images, need = [], num_batches * batch_size
    for batch in datamodule.train_dataloader():
        images.append(batch[0] if isinstance(batch, (list, tuple)) else batch)
        if sum(len(b) for b in images) >= need:
            break
    if not images:
        raise UserError(f"{type(datamodule).__name__}.train_dataloader() is empty: no images to calibrate thresholds")
    return list(torch.cat(images)[:need].split(batch_size))


class ConvertedSNN(AdversarialClassifier):
    """Args:
    net: the ANN architecture, exactly as in the ANN's config.
    ann_checkpoint: the robust (dense or sparse) ANN to convert. Ignored when Lightning restores an SNN
        checkpoint (``--ckpt_path``).
    num_steps: T. encoding: ``direct`` (paper) or ``poisson``.
    recipe: the conversion settings (``srsnn.snn.conversion.Recipe``): ``paper`` (default: hard reset, 0.3 x the
        99.7th percentile at T_c = 100, BN kept and re-learned, 0/1 spikes; made for the fine-tuning that
        follows), ``rate`` (rate-based conversion: within a point of the ANN without fine-tuning,
        ``bench/conversion.py``) or the dotted path of your own ``Recipe``.
    reset, min_threshold, v_init, bn, amplitude, calib_steps, percentile, scale, calib_order: one setting of the
        recipe changed (null: the recipe's; ``calib_order`` is the recipe's ``order``).
    surrogate, detach_reset: the IF neuron's backward (``srsnn.snn.neurons.IFNeuron``); by default the gradient flows
        through the reset (reference code), ``detach_reset: true`` stops it (snnTorch).
    calib_batches, calib_batch_size: the training images thresholds are calibrated on.
    schedule: ``auto`` (default: ``time`` on CPU unless the layers are tiny, ``layer`` on GPU), ``layer``
        (all T per layer; BN training statistics over batch x time, paper) or ``time`` (all layers per step,
        faster on CPUs; BN training statistics per step; ``srsnn.snn.network``). Outputs in eval mode are the same
        under every schedule.
    **kwargs: objective and optimisation; defaults here are the paper's fine-tuning.
    """

    kind = "snn"

    def __init__(
        self,
        net: nn.Module,
        ann_checkpoint: Optional[str] = None,
        num_steps: PositiveInt = 8,
        encoding: Encoding = "direct",
        recipe: str = "paper",
        reset: Optional[Reset] = None,
        surrogate: Union[str, Mapping[str, Any]] = "triangular",
        min_threshold: Optional[NonNegativeFloat] = None,
        detach_reset: bool = False,
        bn: Optional[BatchNorm] = None,
        amplitude: Optional[Amplitude] = None,
        v_init: Optional[float] = None,
        calib_batches: PositiveInt = 10,
        calib_batch_size: PositiveInt = 64,
        calib_steps: Optional[PositiveInt] = None,
        percentile: Optional[Percentile] = None,
        scale: Optional[PositiveFloat] = None,
        calib_order: Optional[Order] = None,
        objective: Objective = "trades",
        inner_attack: InnerAttack = "rfgsm",
        schedule: Schedule = "auto",
        **kwargs,
    ):
        r = recipe_from(
            recipe,
            reset=reset,
            min_threshold=min_threshold,
            v_init=v_init,
            bn=bn,  # checked now,
            amplitude=amplitude,
            calib_steps=calib_steps,
            percentile=percentile,  # before any work
            scale=scale,
            order=calib_order,
        )
        self._classes = _count_classes(net)
        super().__init__(objective=objective, inner_attack=inner_attack, **kwargs)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self._ann = [net]  # the ANN template, kept out of the module tree (and the state dict)
        self.recipe = r
        self.neuron_kwargs = dict(
            reset=r.reset,
            surrogate=surrogate,
            min_threshold=r.min_threshold,
            bn=r.bn,
            detach_reset=detach_reset,
            v_init=r.v_init,
        )
        self.snn = SpikingNetwork(self._structure(net), num_steps, encoding, schedule=schedule)
        self.ann_checkpoint = ann_checkpoint
        self.calib_batches, self.calib_batch_size = calib_batches, calib_batch_size
        self.converted_metrics: dict[str, float] = {}  # validation right after conversion (see on_validation_epoch_end)

    def _structure(self, ann: nn.Module) -> nn.Module:
        """The converted network's modules (weights still the ANN's): what a checkpoint of this SNN restores into."""
        kw = dict(self.neuron_kwargs)
        if self.recipe.amplitude == "threshold":  # BN folded before calibration, where it follows a conv/linear
            kw["bn"] = "fold_where_possible"
        return spiking_structure(ann, **kw)

    @property
    def model(self) -> nn.Module:
        return self.snn

    def network_name(self) -> str:
        return f"{type(self._ann[0]).__name__} as an SNN"

    def _num_classes(self) -> int:
        return self._classes

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if getattr(self, "restoring_checkpoint", False) or (self.trainer is not None and self.trainer.ckpt_path):
            return  # the SNN's own weights, thresholds and masks come from the checkpoint
        if not self.ann_checkpoint:
            raise UserError(
                "ConvertedSNN needs an ANN to convert (--model.init_args.ann_checkpoint <ANN .ckpt>) "
                "or an SNN checkpoint to restore (--ckpt_path <SNN .ckpt>)"
            )
        self.convert_from(self.ann_checkpoint, self.trainer.datamodule)

    def convert_from(self, path: str, datamodule) -> None:
        """Load the ANN, convert it with calibration batches from ``datamodule``, adopt its state.

        Runs where the model will run: on the strategy's root device (``setup`` comes before Lightning moves the
        module, so the module itself is still on the CPU). Under DDP rank 0 alone converts and the other ranks
        receive its SNN; a failure on rank 0 reaches them as an error instead of a hang."""
        ann = copy.deepcopy(self._ann[0])
        load_network(ann, path, "model.ann_checkpoint")
        widths = lambda n: [tuple(raw_weight(m).shape) for _, m in prunable_layers(n)]
        if widths(ann) != widths(self._ann[0]):
            # a channel-pruned ANN: rebuild the SNN structure with its widths
            self.snn = SpikingNetwork(
                self._structure(ann), self.snn.num_steps, self.snn.encoding, schedule=self.snn.schedule
            )
            self.channel_pruned = True
        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else device_of(self.snn)
        distributed = trainer is not None and trainer.world_size > 1
        state, failure, seconds = None, None, None
        if not distributed or trainer.global_rank == 0:
            try:
                state, seconds = self._convert(ann, datamodule, device)
            except Exception as err:
                if not distributed:
                    raise
                failure = err
        if distributed:
            # every rank starts from rank 0's SNN; a failure is broadcast too, so no rank waits for a state
            # that never comes (a rank 0 killed outright ends the wait at the process group's timeout)
            sent = trainer.strategy.broadcast(
                {
                    "state": state,
                    "seconds": seconds,
                    "error": None if failure is None else f"{type(failure).__name__}: {failure}",
                },
                src=0,
            )
            if failure is not None:
                raise failure
            if sent["error"] is not None:
                raise UserError(f"rank 0 failed to convert the ANN ({sent['error']}); this rank stops too")
            state, seconds = sent["state"], sent["seconds"]
            if trainer.global_rank != 0:
                log.info(f"[ConvertedSNN] rank {trainer.global_rank}: received the converted SNN from rank 0")
        self.snn.load_state_dict(state)
        self.converted_metrics["converted/seconds"] = seconds  # wall time of the conversion (rank 0's)

    def _convert(self, ann, datamodule, device) -> tuple[dict, float]:
        """Convert and calibrate on ``device``; the SNN's state on the CPU and the seconds it took."""
        t0 = time.perf_counter()
        batches = calibration_images(datamodule, self.calib_batches, self.calib_batch_size)
        converted = convert(
            ann.to(device),
            [b.to(device) for b in batches],
            num_steps=self.snn.num_steps,
            recipe=self.recipe,
            surrogate=self.neuron_kwargs["surrogate"],
            encoding=self.snn.encoding,
            detach_reset=self.neuron_kwargs["detach_reset"],
        )
        # to the CPU: the module is still there, and a pickled CUDA tensor would land on rank 0's GPU
        state = {k: v.detach().cpu() for k, v in converted.state_dict().items()}
        seconds = time.perf_counter() - t0
        trainer = self._trainer
        log.info(
            f"[ConvertedSNN] rank {trainer.global_rank if trainer else 0}: converted and calibrated on "
            f"{device} in {seconds:.1f} s ({self.calib_batches} x {self.calib_batch_size} images, "
            f"T_c = {self.recipe.calib_steps})"
        )
        return state, seconds

    # -- the converted SNN's accuracy before fine-tuning --------------------------------------------
    # Lightning's sanity check runs validation on the just-converted SNN before the first training step; with
    # trainer.num_sanity_val_steps -1 it covers the whole validation split, so its metrics are the converted-only
    # baseline (fine-tuning must beat it). Lightning discards sanity-check logs: they are kept (in checkpoints too)
    # and logged as converted/val_* by every fit, a resumed one included (a killed run may not have written its
    # logs). Not measured on resume: the model checked then is not the converted one.
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking and not self.trainer.ckpt_path:
            m = self.metrics["val_metrics"]
            self.converted_metrics.update(
                {f"converted/val_{k}": float(m[k].compute()) for k in ("acc", "pgd_acc") if m[k].update_called}
            )

    def on_train_start(self) -> None:
        for name, value in self.converted_metrics.items():
            self.log(name, value, on_step=False, on_epoch=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["converted_metrics"] = dict(self.converted_metrics)

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        self.converted_metrics = dict(checkpoint.get("converted_metrics", {}))

    def model_step(self, batch, split: str) -> torch.Tensor:
        loss = super().model_step(batch, split)
        if split != "train":
            self.log(f"{split}/firing_rate", self.firing_rate(batch[0]), on_step=False, on_epoch=True, sync_dist=True)
        return loss

    @torch.no_grad()
    def firing_rate(self, x: torch.Tensor) -> torch.Tensor:
        """Mean spikes per neuron per time step over the whole network, on clean inputs."""
        spikes, slots = [], []

        def count(_neuron, s):
            spikes.append(float(s.sum()))
            slots.append(s.numel())

        with record_spikes(self.snn, count):
            self.snn(x)
        return torch.tensor(sum(spikes) / max(sum(slots), 1), device=x.device)
