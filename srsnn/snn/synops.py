"""Exact synaptic-operation counting for sparse SNNs (and non-zero MACs for ANNs).

A spike of neuron i costs one accumulate per **non-zero** outgoing synapse (Schmolli et al., CPAL 2025):

    synops = sum_l sum_t sum_i s^l_{t,i} * fanout^l_i,   fanout^l_i = #{j : C^l_{ji} != 0}

where C^l is the linear map from the spikes of layer l to the pre-activations of the next weight layer(s):
the pooling between them (as sum-pooling), then the conv/linear with the binary mask |M| as weights; stride
and padding are the layer's own. ``fanout`` is computed once per layer as the vector-Jacobian product
1^T C^l (every coefficient of C^l is 0 or 1 for non-overlapping pooling), so it is exact. The first layer's
analog input is not a spike: its cost is reported apart as MACs (non-zero weights x output positions).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from srsnn.devices import device_of
from srsnn.errors import UserError
from srsnn.modes import module_mode
from srsnn.pruning.masks import mask_of
from srsnn.snn.network import record_spikes, stateless_prefix
from srsnn.snn.neurons import IFNeuron
from srsnn.snn.spike_readers import WEIGHT_LAYERS, spike_readers

_PASS = (nn.Flatten, nn.Identity, nn.Dropout)


def _apply_connectivity(x: torch.Tensor, path: list[nn.Module], dense: bool) -> torch.Tensor:
    """Propagate through ``path`` with 0/1 coefficients: sum-pooling and binary masks (all-ones if dense)."""
    for m in path:
        if isinstance(m, nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
            x = F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, m.ceil_mode, count_include_pad=True) * (k[0] * k[1])
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            h, w = x.shape[-2:]
            out = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
            if h % out[0] or w % out[1]:
                raise UserError("synop counting needs AdaptiveAvgPool2d sizes that divide the input")
            x = F.adaptive_avg_pool2d(x, out) * ((h // out[0]) * (w // out[1]))
        elif isinstance(m, nn.Conv2d):
            w = torch.ones_like(m.weight) if dense else mask_of(m)
            x = F.conv2d(x, (w != 0).to(x.dtype), None, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.Linear):
            w = torch.ones_like(m.weight) if dense else mask_of(m)
            x = F.linear(x, (w != 0).to(x.dtype))
        elif isinstance(m, _PASS):
            x = m(x) if isinstance(m, nn.Flatten) else x
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            pass  # per-channel affine: does not change connectivity
        else:
            raise UserError(f"synop counting cannot pass a spike through {type(m).__name__}")
    return x


def fanout(
    path_list: list[list[nn.Module]], spike_shape: tuple, dense: bool = False, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Number of non-zero outgoing synapses of every neuron of one layer (shape ``spike_shape``)."""
    total = torch.zeros(spike_shape, device=device)
    for path in path_list:
        s = torch.zeros((1, *spike_shape), device=device, requires_grad=True)
        with torch.enable_grad():
            out = _apply_connectivity(s, path, dense)
            (g,) = torch.autograd.grad(out.sum(), s)
        total += g[0]
    return total.round()


def first_layer_macs(net: nn.Sequential, input_shape: tuple, dense: bool = False) -> float:
    """MACs of the weight layers that see the analog input (before the first neuron), per sample and step."""
    first = stateless_prefix(net)
    return ann_macs(nn.Sequential(*list(net)[:first]), input_shape, dense) if first else 0.0


def ann_macs(net: nn.Module, input_shape: tuple, dense: bool = False) -> float:
    """Non-zero MACs of one ANN forward pass per sample: sum over weight layers of nnz(W) x output positions."""
    macs = [0.0]

    def hook(m, _inp, out):
        nnz = float(m.weight.numel() if dense else (mask_of(m) != 0).sum())
        macs[0] += nnz * (out.shape[-1] * out.shape[-2] if isinstance(m, nn.Conv2d) else 1)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]
    try:
        with module_mode(net), torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device_of(net)))
    finally:
        for h in handles:
            h.remove()
    return macs[0]


def layer_labels(net: nn.Module) -> dict[str, str]:
    """Readable names by module path: weight layers numbered in forward order (``conv1``, ``conv2``, ``fc1``) and
    each neuron layer after the weight layer feeding it (``conv1 IF``; a second neuron layer after the same weight
    layer,
    as in residual blocks, keeps its module path). Works for the ANN (ReLU slots are not neurons) and the SNN."""
    labels, counts, last, taken = {}, {"conv": 0, "fc": 0}, "input", set()
    for name, m in net.named_modules():
        if isinstance(m, WEIGHT_LAYERS):
            if name.endswith("shortcut"):
                labels[name] = name
                continue
            kind = "conv" if isinstance(m, nn.Conv2d) else "fc"
            counts[kind] += 1
            labels[name] = last = f"{kind}{counts[kind]}"
        elif isinstance(m, IFNeuron):
            labels[name] = f"{last} IF" if last not in taken else f"{name} (IF after {last})"
            taken.add(last)
    return labels


class SynopCounter:
    """Accumulates per-layer spikes and synops over batches of a ``SpikingNetwork`` run.

    Use: ``with SynopCounter(snn) as c: snn(x); c.samples += len(x)``; ``c.summary()`` gives per-sample figures."""

    def __init__(self, snn: nn.Module):
        self.snn = snn
        self.net = snn.net
        self.paths = spike_readers(self.net)
        self.names = {m: n for n, m in self.net.named_modules() if isinstance(m, IFNeuron)}
        self._fanout: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.stats = {
            n: {"spikes": 0.0, "synops": 0.0, "dense_synops": 0.0, "neurons": 0, "steps": 0}
            for n in self.names.values()
        }

    def _fanouts(self, neuron: IFNeuron, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.names[neuron], shape)
        if key not in self._fanout:
            dev = device_of(self.snn)
            self._fanout[key] = (
                fanout(self.paths[neuron], shape, False, dev),
                fanout(self.paths[neuron], shape, True, dev),
            )
        return self._fanout[key]

    def add(self, neuron: IFNeuron, spikes: torch.Tensor) -> None:
        """``spikes``: [T, B, ...] of one neuron layer."""
        # float64: float32 sums stop being exact integers above 2^24 (a large layer over a test set passes that)
        per_neuron = spikes.sum(dim=(0, 1), dtype=torch.float64)  # summed over T and the batch
        sparse_fo, dense_fo = (f.double() for f in self._fanouts(neuron, tuple(spikes.shape[2:])))
        st = self.stats[self.names[neuron]]
        st["spikes"] += float(per_neuron.sum())
        st["synops"] += float((per_neuron * sparse_fo).sum())
        st["dense_synops"] += float((per_neuron * dense_fo).sum())
        st["neurons"] = int(per_neuron.numel())
        st["steps"] = int(spikes.shape[0])

    def __enter__(self):
        self._recording = record_spikes(self.net, self.add)
        self._recording.__enter__()
        return self

    def __exit__(self, *exc):
        return self._recording.__exit__(*exc)

    def summary(self) -> dict:
        """Per-sample figures per layer and in total (spikes, firing rate per neuron per step, synops)."""
        n = max(self.samples, 1)
        layers = {}
        for name, st in self.stats.items():
            rate = st["spikes"] / max(n * st["neurons"] * max(st["steps"], 1), 1)
            layers[name] = {
                "spikes": st["spikes"] / n,
                "firing_rate": rate,
                "synops": st["synops"] / n,
                "dense_synops": st["dense_synops"] / n,
                "neurons": st["neurons"],
            }
        total = {k: sum(v[k] for v in layers.values()) for k in ("spikes", "synops", "dense_synops", "neurons")}
        return {"layers": layers, "total": total}
