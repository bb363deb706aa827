"""Stage 1: the robust (optionally sparse) ANN."""

from __future__ import annotations

from typing import Optional

from torch import nn

from srsnn.errors import UserError
from srsnn.io.checkpoints import load_network
from srsnn.snn.native import first_spiking

from .adversarial import AdversarialClassifier


class RobustANN(AdversarialClassifier):
    """Wraps any network of ``srsnn.ann.architectures`` (ReLU in the neuron slots) with an adversarial objective.

    Args:
        net: the network (``class_path`` + ``init_args`` in YAML).
        init_from: a checkpoint (ANN ``.ckpt`` from ``train.py`` or a bare state dict) whose weights, and
            masks if it is sparse, initialise ``net`` — e.g. a dense robust ANN to prune from.
        **kwargs: objective and optimisation, see ``AdversarialClassifier``.
    """

    kind = "ann"

    def __init__(self, net: nn.Module, init_from: Optional[str] = None, **kwargs):
        spiking = first_spiking(net)
        if spiking:  # an SNN run as an ANN would be attacked through one path and counted as MACs
            raise UserError(
                f"{type(net).__name__} has snnTorch spiking neurons ({spiking}): it is an SNN; evaluate or "
                "fine-tune it with model.class_path lightning_modules.NativeSNN (conf/digits/native_snn.yaml)"
            )
        self._classes = _count_classes(net)
        super().__init__(**kwargs)
        self.net = net
        self.init_from = init_from
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if init_from:
            load_network(self.net, init_from, "model.init_from")

    @property
    def model(self) -> nn.Module:
        return self.net

    def _num_classes(self) -> int:
        return self._classes


def _count_classes(net: nn.Module) -> int:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise UserError(f"{type(net).__name__} has no final nn.Linear classifier; the model must end in one")
    return last[-1].out_features
