"""Who reads a neuron's spikes: the one map that conversion, synop counting and NIR export share.

In a converted ``nn.Sequential`` a neuron's spikes reach the next weight layer through pass-through modules
(pooling, flatten, dropout, identity). Inside this repo's ``PreActBlock`` the first neuron (``act1``) feeds
``conv1`` and the projected shortcut (when there is one; the identity skip carries the block's *input*, not
spikes), and ``act2`` feeds ``conv2``. A network built from other blocks needs its block added here.
"""

from __future__ import annotations

from torch import nn

from srsnn.ann.architectures import PreActBlock
from srsnn.errors import UserError
from srsnn.snn.neurons import IFNeuron

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def spike_readers(net: nn.Sequential) -> dict[IFNeuron, list[list[nn.Module]]]:
    """For each neuron of ``net``, the module chains from its spikes to each weight layer that reads them
    (``[pass-through..., conv|linear]``); ``[]`` for a neuron that no weight layer follows."""
    out: dict[IFNeuron, list[list[nn.Module]]] = {}
    layers = list(net)
    for i, m in enumerate(layers):
        if isinstance(m, IFNeuron):
            path: list[nn.Module] = []
            for nxt in layers[i + 1 :]:
                path.append(nxt)
                if isinstance(nxt, WEIGHT_LAYERS):
                    break
            else:
                path = []
            out[m] = [path] if path else []
        elif isinstance(m, PreActBlock):
            out[m.act1] = [[m.conv1]] + ([[m.shortcut]] if m.shortcut is not None else [])
            out[m.act2] = [[m.conv2]]
    missing = [n for n in net.modules() if isinstance(n, IFNeuron) and n not in out]
    if missing:
        raise UserError(
            f"{len(missing)} neuron(s) sit inside a block whose spike readers are unknown; give such "
            "blocks the structure of srsnn.ann.architectures.PreActBlock or add them to srsnn/snn/spike_readers.py"
        )
    return out
