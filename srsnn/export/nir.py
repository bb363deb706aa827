"""Export a converted SNN to NIR (Neuromorphic Intermediate Representation, ``nir`` on PyPI) and run NIR graphs.

Mapping (all weights with pruned entries exactly zero):

* ``Normalize`` and BatchNorm (eval statistics) -> per-channel affine maps. A BN right after a conv is folded
  into it (``srsnn.snn.conversion.fused_weights``); any other BN, and ``Normalize``, becomes a 1x1
  ``nir.Conv2d`` with a diagonal weight and a bias.
* ``Conv2d`` -> ``nir.Conv2d``; ``Linear`` -> ``nir.Affine`` / ``nir.Linear``; ``AvgPool2d`` (and a global
  ``AdaptiveAvgPool2d``) -> ``nir.AvgPool2d``; ``Flatten`` -> ``nir.Flatten``.
* ``IFNeuron`` -> ``nir.IF(r=1, v_threshold=theta', v_reset=0)``: NIR's IF resets to ``v_reset``, i.e. the
  paper's hard reset. NIR fires at ``v > theta'``, this repo at ``v >= theta``: ``theta'`` is the largest float32
  below theta, which makes the two identical. Reset by subtraction and ``v_init != 0`` have no NIR equivalent:
  such graphs are refused (nir >= 1.0.5 has ``v_reset``; older nir, e.g. the one sinabs pins, cannot read the file).
* Flatten dims count without the batch dimension (``start_dim=0``), as NIR's type inference reads them.

Independent consumer: ``nirtorch.nir_to_torch`` (nirtorch >= 2) wires and runs the file (graph, edges summed into
a node, state through time) with its default Conv2d/AvgPool2d/Linear mappings plus modules written from the NIR
spec for ``IF``, ``Scale``, ``Affine`` and ``Flatten`` (tests/test_deploy.py): nirtorch 2.6 has no IF/Scale
mapping, its default ``Affine`` drops the bias and its default ``Flatten`` reads the dims as torch dims (batch
included). snnTorch 1.0's ``import_from_nir`` maps IF to a leaky neuron (``Leaky(beta=0.9)``), so it cannot run IF
graphs faithfully.
* Residual ``Merge`` (``a*skip + (1-a)*branch``) -> two ``nir.Scale`` nodes feeding one summing node (NIR sums
  all edges into a node).

Time is not in the graph: the input node receives the analog image at every step (direct coding), and the
readout is the output averaged over T steps — what ``NIRRunner`` does when it simulates a graph.
snnTorch 1.0's own exporter is not imported by its package and fails on ``nir`` 1.0.8 graphs, so this module
writes the nodes itself with the ``nir`` API.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srsnn.ann.architectures import Normalize, PreActBlock
from srsnn.devices import device_of
from srsnn.errors import UserError
from srsnn.modes import module_mode
from srsnn.pruning.masks import mask_of, raw_weight
from srsnn.snn.conversion import fused_weights
from srsnn.snn.neurons import IFNeuron


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy().astype(np.float32)


def _weight(m: nn.Module) -> torch.Tensor:
    return (raw_weight(m) * mask_of(m)).detach()


def _bn_affine(bn) -> tuple[torch.Tensor, torch.Tensor]:
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return k.detach(), (bn.bias - bn.running_mean * k).detach()


class _Builder:
    def __init__(self):
        import nir

        self.nir = nir
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.count = 0

    def add(self, kind: str, node, inputs: list[str]) -> str:
        name = f"{self.count:02d}_{kind}"
        self.count += 1
        self.nodes[name] = node
        self.edges += [(i, name) for i in inputs]
        return name

    def channel_affine(self, scale: torch.Tensor, bias: torch.Tensor, shape, inputs) -> str:
        # a diagonal 1x1 conv (not a depthwise one: NIR's shape inference ignores groups)
        weight = torch.diag(scale.flatten())[:, :, None, None]
        return self.add(
            "affine",
            self.nir.Conv2d(
                input_shape=tuple(shape[-2:]),
                weight=_np(weight),
                stride=(1, 1),
                padding=(0, 0),
                dilation=(1, 1),
                groups=1,
                bias=_np(bias),
            ),
            inputs,
        )

    def conv(self, m: nn.Conv2d, shape, inputs, bn=None) -> str:
        w, b = fused_weights(m, bn) if bn is not None else (raw_weight(m).detach(), m.bias)
        w = w * mask_of(m)
        b = b.detach() if b is not None else torch.zeros(w.shape[0], device=w.device)
        return self.add(
            "conv",
            self.nir.Conv2d(
                input_shape=tuple(shape[-2:]),
                weight=_np(w),
                stride=m.stride,
                padding=m.padding,
                dilation=m.dilation,
                groups=m.groups,
                bias=_np(b),
            ),
            inputs,
        )

    def neuron(self, m: IFNeuron, shape, inputs) -> str:
        if m.reset_mode != "zero":
            raise UserError(
                "NIR's IF neuron resets to v_reset; reset by subtraction cannot be expressed "
                "(convert with reset: zero to export)"
            )
        if m.v_init:
            raise UserError(
                "NIR's IF starts from v = 0; a neuron with v_init != 0 cannot be expressed "
                "(convert with v_init: 0 to export)"
            )
        # NIR fires at v > theta', this repo at v >= theta: theta' = the largest float32 below theta makes the two
        # identical for every float32 membrane
        theta = np.nextafter(np.float32(m.effective_threshold()), np.float32(-np.inf), dtype=np.float32)
        ones = np.ones(shape, dtype=np.float32)
        return self.add("if", self.nir.IF(r=ones, v_threshold=ones * theta, v_reset=ones * 0), inputs)


def to_nir(snn: nn.Module, input_shape: tuple):
    """The NIR graph of a ``SpikingNetwork`` (or its converted ``nn.Sequential``) for inputs of ``input_shape``."""
    import nir

    net = getattr(snn, "net", snn)
    with module_mode(net):
        neurons = [m for m in net.modules() if isinstance(m, IFNeuron)]
        steps = [n.num_steps for n in neurons]
        for n in neurons:
            n.num_steps = 1  # shapes are propagated with one step
        b = _Builder()
        cur = [b.add("input", nir.Input(input_type={"input": np.array(input_shape)}), [])]
        x = torch.zeros(1, *input_shape, device=device_of(net))  # shapes are traced where the network lives
        layers = list(net)
        i = 0
        try:
            with torch.no_grad():
                while i < len(layers):
                    m, nxt = layers[i], layers[i + 1] if i + 1 < len(layers) else None
                    cur, folded = _layer_nodes(b, i, m, nxt, x, cur)
                    if folded:  # the BatchNorm after a conv went into the conv's node
                        x, m, i = m(x), nxt, i + 1
                    x = m(x) if not isinstance(m, IFNeuron) else torch.zeros_like(x)
                    i += 1
            b.add("output", nir.Output(output_type={"output": np.array(tuple(x.shape[1:]))}), cur)
            return nir.NIRGraph(nodes=b.nodes, edges=b.edges, type_check=False)
        finally:
            for n, t in zip(neurons, steps):
                n.num_steps = t


def _layer_nodes(
    b: _Builder, i: int, m: nn.Module, nxt: Optional[nn.Module], x: torch.Tensor, cur: list[str]
) -> tuple[list[str], bool]:
    """The NIR node(s) of layer ``i`` (``m``, input ``x``) after the nodes ``cur``: the new current nodes, and
    whether ``nxt`` (a BatchNorm after a conv) was folded into them."""
    import nir

    shape = tuple(x.shape[1:])
    if isinstance(m, Normalize):
        C = shape[0]
        return [
            b.channel_affine((1 / m.std).flatten().expand(C), (-m.mean / m.std).flatten().expand(C), x.shape, cur)
        ], False
    if isinstance(m, nn.Conv2d):
        fold = nxt if isinstance(nxt, nn.modules.batchnorm._BatchNorm) else None
        return [b.conv(m, x.shape, cur, fold)], fold is not None
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return [b.channel_affine(*_bn_affine(m), x.shape, cur)], False
    if isinstance(m, IFNeuron):
        return [b.neuron(m, shape, cur)], False
    if isinstance(m, nn.AvgPool2d):
        k, s, p = (v if isinstance(v, tuple) else (v,) * 2 for v in (m.kernel_size, m.stride, m.padding))
        return [
            b.add("avgpool", nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p)), cur)
        ], False
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if tuple(m(x).shape[-2:]) != (1, 1):
            raise UserError("NIR export supports AdaptiveAvgPool2d only as global pooling (output 1x1)")
        return [
            b.add(
                "avgpool",
                nir.AvgPool2d(kernel_size=np.array(shape[1:]), stride=np.array(shape[1:]), padding=np.array([0, 0])),
                cur,
            )
        ], False
    if isinstance(m, nn.Flatten):
        # NIR counts dims without the batch dimension (its type inference checks this)
        return [
            b.add("flatten", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1), cur)
        ], False
    if isinstance(m, nn.Linear):
        w = _weight(m)
        node = nir.Affine(weight=_np(w), bias=_np(m.bias)) if m.bias is not None else nir.Linear(weight=_np(w))
        return [b.add("linear", node, cur)], False
    if isinstance(m, PreActBlock):
        return _block(b, m, x, cur), False
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return cur, False
    raise UserError(
        f"NIR cannot express layer {i} ({type(m).__name__}); supported: Conv2d, Linear, "
        "BatchNorm, AvgPool2d, global AdaptiveAvgPool2d, Flatten, IFNeuron, PreActBlock"
    )


def _block(b: _Builder, m: PreActBlock, x: torch.Tensor, cur: list[str]) -> list[str]:
    import nir

    k, c = _bn_affine(m.bn1)
    h = [b.channel_affine(k, c, x.shape, cur)]
    h = [b.neuron(m.act1, tuple(x.shape[1:]), h)]
    spikes = h
    y = m.conv1(torch.zeros_like(x))
    h = [b.conv(m.conv1, x.shape, h, m.bn2)]
    h = [b.neuron(m.act2, tuple(y.shape[1:]), h)]
    h = [b.conv(m.conv2, y.shape, h)]
    skip = [b.conv(m.shortcut, x.shape, spikes)] if m.shortcut is not None else cur
    a = float(m.merge.alpha.clamp(0, 1))
    out_shape = m.conv2(y).shape[1:]
    ones = np.ones(tuple(out_shape), dtype=np.float32)
    branch_s = [b.add("scale", nir.Scale(scale=ones * (1 - a)), h)]
    skip_s = [b.add("scale", nir.Scale(scale=ones * a), skip)]
    return [b.add("sum", nir.Scale(scale=ones), branch_s + skip_s)]


def export_nir(snn: nn.Module, path: str, input_shape: tuple) -> dict[str, int]:
    import nir

    graph = to_nir(snn, input_shape)
    nir.write(path, graph)
    return {"bytes": os.path.getsize(path), "nodes": len(graph.nodes)}


class NIRRunner(nn.Module):
    """Simulates a NIR graph written by ``export_nir`` for T steps (direct coding, readout = mean over T).

    Independent of the original modules: everything comes from the graph's parameters."""

    def __init__(self, graph, num_steps: int = 8):
        super().__init__()
        import nir

        self.graph = nir.read(graph) if isinstance(graph, (str, os.PathLike)) else graph
        self.T = num_steps
        self.order = self._topological()
        self.inputs = {n: [a for a, b in self.graph.edges if b == n] for n in self.graph.nodes}
        self.spike_counts: dict[str, float] = {}

    def _topological(self) -> list[str]:
        nodes, edges = list(self.graph.nodes), self.graph.edges
        indeg = {n: 0 for n in nodes}
        for _, b in edges:
            indeg[b] += 1
        ready, order = [n for n in nodes if indeg[n] == 0], []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for a, b in edges:
                if a == n:
                    indeg[b] -= 1
                    if indeg[b] == 0:
                        ready.append(b)
        return order

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import nir

        t = lambda a: torch.as_tensor(np.asarray(a), dtype=x.dtype, device=x.device)
        state: dict[str, torch.Tensor] = {}
        self.spike_counts = {n: 0.0 for n, v in self.graph.nodes.items() if isinstance(v, nir.IF)}
        out_sum = 0
        for _ in range(self.T):
            val: dict[str, torch.Tensor] = {}
            for name in self.order:
                node = self.graph.nodes[name]
                ins = [val[i] for i in self.inputs[name]]
                h = x if isinstance(node, nir.Input) else sum(ins[1:], ins[0])
                if isinstance(node, nir.Conv2d):
                    h = F.conv2d(
                        h,
                        t(node.weight),
                        t(node.bias),
                        _pair(node.stride),
                        _pair(node.padding),
                        _pair(node.dilation),
                        int(node.groups),
                    )
                elif isinstance(node, nir.Affine):
                    h = F.linear(h, t(node.weight), t(node.bias))
                elif isinstance(node, nir.Linear):
                    h = F.linear(h, t(node.weight))
                elif isinstance(node, nir.AvgPool2d):
                    h = F.avg_pool2d(h, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
                elif isinstance(node, nir.Flatten):
                    h = h.flatten(1)
                elif isinstance(node, nir.Scale):
                    h = h * t(node.scale)
                elif isinstance(node, nir.IF):
                    v = state.get(name, torch.zeros_like(h)) + h * t(node.r)
                    s = (v > t(node.v_threshold)).to(h.dtype)  # NIR's convention (the export shifts theta)
                    state[name] = torch.where(s.bool(), t(node.v_reset).expand_as(v), v)
                    self.spike_counts[name] += float(s.sum())
                    h = s
                elif not isinstance(node, (nir.Input, nir.Output)):
                    raise UserError(f"NIRRunner cannot run node {name} ({type(node).__name__})")
                val[name] = h
            out_sum = out_sum + val[self.order[-1]]
        return out_sum / self.T


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])
