"""An SNN you built with snnTorch: evaluated through the spikes, counted and fine-tuned like the repo's own.

``test``: the worst case over the paper protocol through the gradient paths of ``srsnn.robustness.paths.
ensemble`` (own surrogate, 17 threshold-scaled surrogate shapes, BPTR, RGA), the adaptive tier and SA-PGD
through ASSG, HART and PDSG, with ``callbacks.AttackEvaluation``; spikes, synops and energy from the spikes the net
emits with ``callbacks.SpikeEnergyMonitor``. ``fit``: TRADES with R+FGSM (the paper's SNN fine-tuning) through BPTT
with the net's own surrogate; pruning masks stay frozen: those of a state dict saved from ``torch.nn.utils.prune``
(``weight_orig`` / ``weight_mask``), or with ``mask_zeros`` each layer's zero weights.
"""

from __future__ import annotations

from typing import Optional

from jsonargparse.typing import PositiveInt
from torch import nn

from srsnn.io.checkpoints import load_weights
from srsnn.pruning.masks import masks_from_nonzero
from srsnn.robustness.objectives import InnerAttack, Objective
from srsnn.snn.native import NativeNet, Readout

from .adversarial import AdversarialClassifier
from .robust_ann import _count_classes


class NativeSNN(AdversarialClassifier):
    """Args:
    net: your snnTorch network (``class_path`` + ``init_args``); its spiking neurons (Leaky, Synaptic, Alpha,
        Lapicque, RLeaky, RSynaptic, or one declared with ``srsnn.snn.native.register_neuron``) are found wherever
        they sit; it encodes the image itself (direct input: the image at every step).
    weights: its state dict (``torch.save(net.state_dict(), path)`` or ``.safetensors``), read weights-only; null
        keeps the net's own initialisation (to train it here). A net pruned with ``torch.nn.utils.prune`` keeps its
        masks (frozen: fine-tuning never regrows a pruned weight).
    eot: for a net that draws its own input spikes (rate coding inside its forward): the logits are the mean over
        this many forwards (expectation over transformation); such a net with ``eot: 1`` is refused.
    mask_zeros: the weights' zeros are pruned weights (a net pruned elsewhere and saved dense): each Conv2d /
        Linear layer's mask is its non-zero pattern, frozen.
    readout: ``auto``, ``spike_count``, ``membrane_mean`` or ``logits`` (``srsnn.snn.native.NativeNet``);
        time_dim: the records' time dimension where it cannot be told from the batch.
    num_classes: the net's outputs (default: the last nn.Linear's ``out_features``).
    **kwargs: objective and optimisation (``AdversarialClassifier``); the defaults are the paper's SNN fine-tuning.
    """

    kind = "snn"

    def __init__(
        self,
        net: nn.Module,
        weights: Optional[str] = None,
        readout: Readout = "auto",
        time_dim: Optional[int] = None,
        num_classes: Optional[int] = None,
        mask_zeros: bool = False,
        eot: PositiveInt = 1,
        objective: Objective = "trades",
        inner_attack: InnerAttack = "rfgsm",
        **kwargs,
    ):
        self._classes = num_classes or _count_classes(net)
        super().__init__(objective=objective, inner_attack=inner_attack, **kwargs)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.snn_model = NativeNet(net, readout, time_dim, eot)
        if weights:
            load_weights(net, weights)
        if mask_zeros:
            masks_from_nonzero(net)

    @property
    def model(self) -> nn.Module:
        return self.snn_model

    def _num_classes(self) -> int:
        return self._classes

    def network_name(self) -> str:
        return type(self.snn_model.net).__name__
