"""Safe checkpoint reading: ``torch.load(weights_only=True)`` only, with one clear error per bad file."""
from __future__ import annotations

import os
import pickle
from typing import Any, Optional

import torch

from .errors import UserError

TAG = "sparse_robust_snn"  # what this repo stores in every Lightning checkpoint: {"kind": "ann"|"snn", ...}


def read_checkpoint(path: str, what: str = "checkpoint") -> dict[str, Any]:
    """Load a file with ``weights_only=True``; refuse pickled code instead of running it."""
    if not path or not os.path.isfile(path):
        raise UserError(f"{what} {path!r} does not exist; pass the path of a .ckpt written by train.py")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0][:200]
        raise UserError(f"refused to load {what} {path!r}: it holds Python objects beyond tensors and plain "
                        f"containers, which could run code ({first}). Only files written by this repo are "
                        "accepted; re-save the state dict with torch.save(model.state_dict(), path).") from None
    except Exception as err:
        raise UserError(f"{what} {path!r} is not a readable PyTorch checkpoint "
                        f"({type(err).__name__}: {(str(err).splitlines() or ['empty file'])[0][:160]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} {path!r} holds a {type(obj).__name__}, not a checkpoint dictionary")
    return obj


def network_state_dict(ckpt: dict[str, Any], path: str, prefix: str, kind: Optional[str] = None) -> dict:
    """The network's tensors from a Lightning checkpoint (keys under ``prefix``) or a bare state dict."""
    info = ckpt.get(TAG, {})
    if kind is not None and info.get("kind") not in (None, kind):
        raise UserError(f"{path!r} is a {info.get('kind')} checkpoint, but a {kind} checkpoint is needed here")
    sd = ckpt.get("state_dict", ckpt)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path!r} has no state_dict of tensors; is it a checkpoint written by train.py?")
    if any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def load_network(net, path: str, what: str, kind: Optional[str] = "ann") -> None:
    """Read ``path`` safely and load its network (masks, scores, channel-pruned widths) into ``net``."""
    from .channels import adopt_shapes
    from .masks import load_masked_state_dict

    ckpt = read_checkpoint(path, what)
    sd = network_state_dict(ckpt, path, "net.", kind=kind)
    if ckpt.get(TAG, {}).get("channel_pruned"):
        adopt_shapes(net, sd)
    try:
        load_masked_state_dict(net, sd)
    except UserError as err:
        raise UserError(f"{what} {path!r} does not fit model.net: {err}") from None
