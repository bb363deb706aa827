"""Compact sparse storage: the pruned network as values + narrow relative indices in one safetensors file.

Every masked weight is stored as its non-zero values (fp32, exact) and the gap to the previous non-zero
entry as ``uint8`` (Han et al., Deep Compression, 2016): a gap above 255 inserts a zero-valued filler entry.
At density d the cost is about (4 + 1) * (1 + e^{-256 d}) bytes per kept weight, so 99 % sparsity stores
~75x less than dense fp32, where a bitmask alone caps at 32x. Everything else (biases, BN, thresholds) is
stored densely. The file also holds the architecture spec, so ``load_compact`` rebuilds the exact model.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from srsnn.errors import UserError
from srsnn.io.dotted import import_dotted
from srsnn.pruning.channels import adopt_shapes
from srsnn.pruning.masks import (
    get_weight_mask,
    load_masked_state_dict,
    mask_of,
    masks_from_nonzero,
    prunable_layers,
    raw_weight,
    strip_scores,
)

FORMAT = "sparse-robust-snn/compact-1"


def encode_gaps(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-zeros of a flat tensor -> (values fp32, uint8 gaps) with zero fillers for gaps > 255."""
    pos = torch.nonzero(flat, as_tuple=True)[0]
    if pos.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.uint8)
    gaps = torch.diff(pos, prepend=torch.tensor([-1])) - 1
    fillers = gaps // 256
    reps = fillers + 1
    values = torch.zeros(int(reps.sum()))
    out_gaps = torch.full((int(reps.sum()),), 255, dtype=torch.int64)
    last = torch.cumsum(reps, 0) - 1  # index of each real entry after its fillers
    values[last] = flat[pos].float()
    out_gaps[last] = gaps - 256 * fillers
    return values, out_gaps.to(torch.uint8)


def decode_gaps(values: torch.Tensor, gaps: torch.Tensor, numel: int) -> torch.Tensor:
    flat = torch.zeros(numel)
    if values.numel():
        pos = torch.cumsum(gaps.long() + 1, 0) - 1
        flat[pos] = values
    return flat


def _spec_json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def export_compact(net: nn.Module, path: str, spec: dict[str, Any]) -> dict[str, int]:
    """Write ``net`` (an ANN ``nn.Sequential`` or a ``SpikingNetwork``) to ``path``; return byte counts."""
    net = _plain(net)
    masked = {name for name, m in prunable_layers(net) if get_weight_mask(m) is not None}
    state = net.state_dict()
    values, gaps, layers, dense, dense_meta, ints, ints_meta = [], [], [], [], [], [], []
    for name, m in prunable_layers(net):
        w = (raw_weight(m) * mask_of(m)).detach().cpu() if name in masked else m.weight.detach().cpu()
        v, g = encode_gaps(w.flatten())
        if v.numel() * 5 >= w.numel() * 4:  # denser than ~80 %: plain fp32 is smaller
            dense.append(w.float().flatten()), dense_meta.append([f"{name}.weight", list(w.shape)])
            layers.append([name, list(w.shape), -1])
            continue
        values.append(v), gaps.append(g)
        layers.append([name, list(w.shape), int(v.numel())])
    skip = {f"{n}.parametrizations.weight.{s}" for n in masked for s in ("original", "0.mask")} | {
        f"{n}.weight" for n, _ in prunable_layers(net)
    }
    for key, t in state.items():
        if key in skip:
            continue
        if t.is_floating_point():
            dense.append(t.detach().cpu().float().flatten()), dense_meta.append([key, list(t.shape)])
        else:
            ints.append(t.detach().cpu().long().flatten()), ints_meta.append([key, list(t.shape)])
    tensors = {
        "values": torch.cat(values) if values else torch.zeros(0),
        "gaps": torch.cat(gaps) if gaps else torch.zeros(0, dtype=torch.uint8),
        "dense": torch.cat(dense) if dense else torch.zeros(0),
        "ints": torch.cat(ints) if ints else torch.zeros(0, dtype=torch.long),
    }
    meta = {
        "format": FORMAT,
        "spec": _spec_json(spec),
        "layers": json.dumps(layers),
        "dense": json.dumps(dense_meta),
        "ints": json.dumps(ints_meta),
    }
    save_file(tensors, path, metadata=meta)
    dense_bytes = sum(t.numel() * 4 for k, t in _dense_state(net).items())
    return {
        "compact_bytes": os.path.getsize(path),
        "dense_fp32_bytes": dense_bytes,
        "stored_weights": int(sum(l[2] if l[2] >= 0 else int(torch.tensor(l[1]).prod()) for l in layers)),
        "nonzero_weights": int(sum(int((mask_of(m) != 0).sum()) for _, m in prunable_layers(net))),
    }


def _plain(net: nn.Module) -> nn.Module:
    import copy

    net = copy.deepcopy(net)
    strip_scores(net)
    return net


def _dense_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict the network would have without masks (the dense fp32 baseline)."""
    out = {}
    for k, t in net.state_dict().items():
        if k.endswith(".parametrizations.weight.0.mask"):
            continue
        out[k.replace(".parametrizations.weight.original", ".weight")] = t
    return out


def _build(spec: dict[str, Any]) -> nn.Module:
    net_spec = spec["net"]
    module = net_spec["class_path"].rpartition(".")[0]
    try:
        factory = import_dotted(net_spec["class_path"])
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(
            f"the model's network is {net_spec['class_path']}, which cannot be imported here ({err}); "
            f"make its module importable (run from the folder that holds {module.split('.')[0]}.py or "
            f"its package, or add that folder to PYTHONPATH)"
        ) from None
    net = factory(**net_spec.get("init_args", {}))
    if spec.get("kind") == "snn":
        from srsnn.snn.conversion import spiking_structure
        from srsnn.snn.network import SpikingNetwork

        s = spec["snn"]
        net = SpikingNetwork(spiking_structure(net, **s["neuron"]), s["num_steps"], s["encoding"])
    return net


def load_compact(path: str) -> nn.Module:
    """Rebuild the exact network stored by ``export_compact`` (eval mode)."""
    if not os.path.isfile(path):
        raise UserError(f"compact model {path!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except Exception as err:
        raise UserError(f"{path!r} is not a safetensors file ({type(err).__name__}: {err})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path!r} is not a {FORMAT} file (format {meta.get('format')!r})")
    spec = json.loads(meta["spec"])
    net = _build(spec)
    sd: dict[str, torch.Tensor] = {}
    vo = 0
    for name, shape, n in json.loads(meta["layers"]):
        if n < 0:
            continue  # stored densely, below
        numel = int(torch.tensor(shape).prod())
        sd[f"{name}.weight"] = decode_gaps(tensors["values"][vo : vo + n], tensors["gaps"][vo : vo + n], numel).view(
            shape
        )
        vo += n
    for part, dtype in (("dense", torch.float32), ("ints", torch.long)):
        o = 0
        for key, shape in json.loads(meta[part]):
            numel = int(torch.tensor(shape).prod()) if shape else 1
            sd[key] = tensors[part][o : o + numel].view(shape).to(dtype)
            o += numel
    adopt_shapes(net, sd)
    load_masked_state_dict(net, sd)
    masks_from_nonzero(net)  # the stored zeros are the mask, as in conversion: M = (W != 0)
    return net.eval()
