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
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn

from srsnn.devices import device_of
from srsnn.errors import UserError
from srsnn.modes import module_mode
from srsnn.pruning.masks import mask_of
from srsnn.snn.native import NativeNet, spiking_neurons
from srsnn.snn.network import layers_of, record_spikes
from srsnn.snn.neurons import IFNeuron
from srsnn.snn.spike_readers import WEIGHT_LAYERS

_PASS = (nn.Flatten, nn.Identity, nn.Dropout)


def _connections(m: nn.Module, dense: bool, nonzero: bool) -> torch.Tensor:
    """The layer's synapses as 0/1: all (``dense``), the non-zero weights (``nonzero``), or its mask."""
    if dense:
        return torch.ones_like(m.weight)
    return (m.weight != 0).to(m.weight.dtype) if nonzero else mask_of(m)


def _apply_connectivity(x: torch.Tensor, path: list[nn.Module], dense: bool, nonzero: bool = False) -> torch.Tensor:
    """Propagate through ``path`` with 0/1 coefficients: sum-pooling and binary masks (all-ones if dense; the non-zero
    weights if ``nonzero``)."""
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
            w = _connections(m, dense, nonzero)
            x = F.conv2d(x, (w != 0).to(x.dtype), None, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.Linear):
            w = _connections(m, dense, nonzero)
            x = F.linear(x, (w != 0).to(x.dtype))
        elif isinstance(m, _PASS):
            x = m(x) if isinstance(m, nn.Flatten) else x
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            pass  # per-channel affine: does not change connectivity
        else:
            raise UserError(f"synop counting cannot pass a spike through {type(m).__name__}")
    return x


def fanout(
    path_list: list[list[nn.Module]],
    spike_shape: tuple,
    dense: bool = False,
    device: Optional[torch.device] = None,
    nonzero: bool = False,
) -> torch.Tensor:
    """Number of non-zero outgoing synapses of every neuron of one layer (shape ``spike_shape``)."""
    total = torch.zeros(spike_shape, device=device)
    for path in path_list:
        s = torch.zeros((1, *spike_shape), device=device, requires_grad=True)
        with torch.enable_grad():
            out = _apply_connectivity(s, path, dense, nonzero)
            (g,) = torch.autograd.grad(out.sum(), s)
        total += g[0]
    return total.round()


def energy_uj(synops: float, macs: float, e_ac_pj: float = 0.9, e_mac_pj: float = 4.6) -> float:
    """Energy estimate per sample in uJ: E = synops * E_AC + MACs * E_MAC (an ANN: synops = 0, every MAC; an SNN: the
    analog first layer's MACs over T), E_AC = 0.9 pJ and E_MAC = 4.6 pJ at 45 nm (Horowitz, ISSCC 2014)."""
    return (synops * e_ac_pj + macs * e_mac_pj) * 1e-6


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
        elif isinstance(m, SpikingNeuron):
            kind = "IF" if isinstance(m, IFNeuron) else type(m).__name__
            labels[name] = f"{last} {kind}" if last not in taken else f"{name} ({kind} after {last})"
            taken.add(last)
    return labels


def _window_area(m: nn.Module, x: torch.Tensor) -> int | None:
    """The number of inputs an average pooling sums per output (its divisor), or None where it is not one number
    (padding left out of the count, a divisor override, adaptive windows that do not divide the input)."""
    if isinstance(m, nn.AvgPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
        exact = m.divisor_override is None and (m.count_include_pad or not m.padding)
        return k[0] * k[1] if exact else None
    h, w = x.shape[-2:]
    out = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
    return (h // out[0]) * (w // out[1]) if out[0] and out[1] and not (h % out[0] or w % out[1]) else None


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class SynopCounter:
    """Spikes, synops and input MACs of any SNN (a converted ``SpikingNetwork`` or an snnTorch network of yours,
    ``srsnn.snn.native``), from the spikes it emits (``record_spikes``, the one spike recorder).

    Every call of a weight layer (Conv2d, Linear) is classified by what it receives: the weight layers called
    before the first neuron fires in a forward take the analog input (their MACs: non-zero weights x output positions,
    read at every time step, whether the network recomputes them per step or, as ``SpikingNetwork`` does, once);
    any later weight layer must receive events (spikes, or max-pooled spikes: a
    tensor whose non-zero entries share one value), each costing its non-zero outgoing synapses,
    ``synops = sum_i 1[in_i != 0] fanout_i`` with ``fanout = 1^T 1[W != 0]`` through the layer's own stride, padding
    and dilation (exact at borders; weights pruned by any tool are zeros). Average-pooled events count as what they
    sum: a window of area k^2 holding c spikes reaches the next layer as c / k^2, and
    ``sum_j (k^2 in_j) fanout_j`` equals the spikes' own synops through the pooling (the converted networks' 2x2
    average pooling). A weight layer fed anything else (a membrane, an analog value after the first spike) cannot be
    counted as synops and is refused by name, never counted as MACs.

    Use: ``with SynopCounter(snn) as c: snn(x); c.samples += len(x)``; ``c.summary()``. Layers are named as in
    ``layers_of(snn)``."""

    def __init__(self, snn: nn.Module):
        # the module whose forward is one input (a NativeNet's own may run several: draws, its determinism check)
        self.net = snn.net if isinstance(snn, NativeNet) else snn
        inner = layers_of(snn)
        self.neurons = {m: n for n, m in spiking_neurons(inner)}
        if not self.neurons:
            raise UserError(f"{type(self.net).__name__} has no snnTorch spiking neuron to count spikes of")
        self.layers = {m: n for n, m in inner.named_modules() if isinstance(m, WEIGHT_LAYERS)}
        inside = {id(c) for nm in self.neurons for c in nm.modules()}  # a recurrent neuron's own weights (RLeaky)
        self.recurrent = {m for m in self.layers if id(m) in inside}
        odd = [n for n, m in inner.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d))]
        if odd:
            raise UserError(f"synop counting supports Conv2d and Linear weight layers; {odd[0]} is not one")
        self._fanout: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.samples, self.fired, self.calls, self.read = 0, False, {}, {}
        self.pooled: tuple[int, float] | None = None  # the last average pooling of events: (its output, k^2)
        self.spikes = {n: {"spikes": 0.0, "neurons": 0, "steps": 0} for n in self.neurons.values()}
        zero = dict.fromkeys(("synops", "dense_synops", "macs", "dense_macs"), 0.0)
        self.synops = {n: dict(zero) for n in self.layers.values()}
        self.input_layers: set[str] = set()

    def _start_forward(self, *_):
        """A new input: the layers called before its first spike take the analog input."""
        self.fired, self.calls, self.read = False, {}, {}

    def _end_forward(self, _m, inp, _out):
        """The input layers' MACs of this forward: read at every step of every sample."""
        steps, batch = max(self.calls.values(), default=1), len(inp[0])
        for name, (macs, dense) in self.read.items():
            self.synops[name]["macs"] += macs * steps * batch
            self.synops[name]["dense_macs"] += dense * steps * batch

    def _spikes(self, m, spk: torch.Tensor) -> None:
        """``record_spikes``' sink: ``spk`` [steps, B, ...] of one neuron call."""
        name = self.neurons[m]
        st, self.calls[name] = self.spikes[name], self.calls.get(name, 0) + spk.shape[0]
        st["spikes"] += float((spk != 0).sum(dtype=torch.float64))
        st["neurons"], st["steps"] = int(spk[0, 0].numel()), max(st["steps"], self.calls[name])
        self.fired = True

    def _pool_hook(self, m, inp, out):
        """Average pooling of events: remember its output and the window area, by which its values are counts."""
        x, area = inp[0], _window_area(m, inp[0])
        values = x[x != 0]
        binary = not values.numel() or bool((values == values[0]).all())
        self.pooled = (_storage(out), area / (float(values[0]) if values.numel() else 1.0)) if binary and area else None

    def _pass_hook(self, m, inp, out):
        """A flatten (a copy of a channels-last tensor) or an identity keeps pooled events pooled."""
        if self.pooled is not None and self.pooled[0] == _storage(inp[0]):
            self.pooled = (_storage(out), self.pooled[1])

    def _fanouts(self, m: nn.Module, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.layers[m], shape)
        if key not in self._fanout:
            dev = m.weight.device
            self._fanout[key] = tuple(fanout([[m]], shape, dense, dev, nonzero=True).double() for dense in (0, 1))
        return self._fanout[key]

    def _layer_hook(self, m, inp, out):
        name, x = self.layers[m], inp[0]
        st = self.synops[name]
        if m not in self.recurrent and (not self.fired or name in self.input_layers):
            self.input_layers.add(name)
            positions = out[0, 0].numel() if out.dim() > 2 else 1
            self.read[name] = (float((m.weight != 0).sum()) * positions, float(m.weight.numel()) * positions)
            return
        if self.pooled is not None and self.pooled[0] == _storage(x):  # average-pooled events: spikes per window
            counts = (x.double() * self.pooled[1]).round()
        else:
            values = x[x != 0]
            if values.numel() and not bool((values == values[0]).all()):
                raise UserError(
                    f"synop counting: {name} ({type(m).__name__}) receives non-binary values after the first spiking "
                    "layer (a membrane, or spikes pooled other than by average or max pooling?): its cost is not "
                    "spikes x synapses; feed it spikes"
                )
            counts = x != 0
        sparse_fo, dense_fo = self._fanouts(m, tuple(x.shape[1:]))
        per_element = counts.sum(0, dtype=torch.float64)
        st["synops"] += float((per_element * sparse_fo).sum())
        st["dense_synops"] += float((per_element * dense_fo).sum())

    def __enter__(self):
        self._handles = [self.net.register_forward_pre_hook(self._start_forward)]
        self._handles += [self.net.register_forward_hook(self._end_forward)]
        self._handles += [m.register_forward_hook(self._layer_hook) for m in self.layers]
        pools = [m for m in self.net.modules() if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
        self._handles += [m.register_forward_hook(self._pool_hook) for m in pools]
        passes = [m for m in self.net.modules() if isinstance(m, _PASS)]
        self._handles += [m.register_forward_hook(self._pass_hook) for m in passes]
        self._recording = record_spikes(self.net, self._spikes)
        self._recording.__enter__()
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return self._recording.__exit__(*exc)

    def summary(self) -> dict:
        """Per sample: spikes and firing rate per neuron layer; synops (and the dense-mask counterfactual) per weight
        layer that receives spikes; MACs of the input layers."""
        n = max(self.samples, 1)
        layers = {
            name: {
                "spikes": st["spikes"] / n,
                "firing_rate": st["spikes"] / max(n * st["neurons"] * max(st["steps"], 1), 1),
                "neurons": st["neurons"],
                "steps_per_sample": st["steps"],
            }
            for name, st in self.spikes.items()
        }
        synops = {
            name: {k: v / n for k, v in st.items()} for name, st in self.synops.items() if name not in self.input_layers
        }
        total = {
            "spikes": sum(v["spikes"] for v in layers.values()),
            "neurons": sum(v["neurons"] for v in layers.values()),
            "synops": sum(v["synops"] for v in synops.values()),
            "dense_synops": sum(v["dense_synops"] for v in synops.values()),
        }
        macs = sum(self.synops[name]["macs"] for name in self.input_layers) / n
        dense_macs = sum(self.synops[name]["dense_macs"] for name in self.input_layers) / n
        return {"layers": layers, "synops_by_layer": synops, "total": total, "input_macs": macs,
                "dense_input_macs": dense_macs, "input_layers": sorted(self.input_layers)}  # fmt: skip
