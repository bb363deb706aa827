"""Safe checkpoint reading: ``torch.load(weights_only=True)`` only, with one clear error per bad file."""

from __future__ import annotations

import os
import pickle
from typing import Any, Optional

import torch

from srsnn.errors import UserError
from srsnn.io.runs import files_under

TAG = "sparse_robust_snn"  # what this repo stores in every Lightning checkpoint: {"kind": "ann"|"snn", ...}


def resolve_checkpoint(path: Optional[str], what: str = "checkpoint") -> Optional[str]:
    """A checkpoint file from a file path, a run folder (its newest ``last.ckpt``) or ``<run folder>/best`` /
    ``<run folder>/last`` (its newest ``best.ckpt`` / ``last.ckpt``); anything else is returned unchanged."""
    if not path or os.path.isfile(path):
        return path
    base, leaf = path, "last.ckpt"
    if not os.path.isdir(path) and os.path.basename(os.path.normpath(path)) in ("best", "last"):
        base, leaf = os.path.dirname(os.path.normpath(path)), os.path.basename(os.path.normpath(path)) + ".ckpt"
    if not base or not os.path.isdir(base):
        return path
    found = files_under(base, leaf)
    if not found:
        raise UserError(
            f"{what} {path!r}: no {leaf} under the folder {base!r}; pass a .ckpt file or a run folder "
            "written by train.py fit"
        )
    return found[-1]


def run_folder_of(ckpt_path: str) -> str:
    """The run folder a checkpoint belongs to: the folder holding its ``lightning_logs/`` (``<run>/lightning_logs/
    version_K/checkpoints/last.ckpt``), else the checkpoint file's own folder."""
    parts = os.path.normpath(os.path.abspath(ckpt_path)).split(os.sep)
    if "lightning_logs" in parts:
        k = len(parts) - 1 - parts[::-1].index("lightning_logs")
        return os.path.relpath(os.sep.join(parts[:k]) or os.sep)
    return os.path.relpath(os.path.dirname(os.path.abspath(ckpt_path)))


def read_checkpoint(path: str, what: str = "checkpoint") -> dict[str, Any]:
    """Load a file with ``weights_only=True``; refuse pickled code instead of running it."""
    path = resolve_checkpoint(path, what)
    if not path or not os.path.isfile(path):
        raise UserError(f"{what} {path!r} does not exist; pass the path of a .ckpt written by train.py")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..); the legacy format starts with a pickle protocol byte (0x80)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        kind = (
            "an empty file"
            if not head
            else "text (YAML/JSON/CSV?)"
            if all(32 <= b < 127 or b in (9, 10, 13) for b in head)
            else "some other binary format"
        )
        raise UserError(
            f"{what} {path!r} is not a PyTorch checkpoint (it holds {kind}); pass a .ckpt written by "
            "train.py fit, or its run folder"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0][:200]
        raise UserError(
            f"refused to load {what} {path!r}: it holds Python objects beyond tensors and plain "
            f"containers, which could run code ({first}). Only files written by this repo are "
            "accepted; re-save the state dict with torch.save(model.state_dict(), path)."
        ) from None
    except Exception as err:
        raise UserError(
            f"{what} {path!r} is not a readable PyTorch checkpoint "
            f"({type(err).__name__}: {(str(err).splitlines() or ['empty file'])[0][:160]})"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} {path!r} holds a {type(obj).__name__}, not a checkpoint dictionary")
    return obj


def check_kind(found: Optional[str], wanted: Optional[str], what: str, fix: str) -> None:
    """The one ANN-vs-SNN check: ``what`` holds a ``found`` checkpoint ("ann" / "snn"; None: it does not say) where
    a ``wanted`` one is needed; ``fix`` says what to pass instead."""
    if found and wanted and found != wanted:
        raise UserError(f"{what} is an {found.upper()} checkpoint, but {wanted.upper()} weights are needed here; {fix}")


def network_state_dict(ckpt: dict[str, Any], path: str, prefix: str, kind: Optional[str] = None) -> dict:
    """The network's tensors from a Lightning checkpoint (keys under ``prefix``) or a bare state dict."""
    check_kind(ckpt.get(TAG, {}).get("kind"), kind, repr(path), f"pass the {kind} stage's checkpoint or run folder")
    sd = ckpt.get("state_dict", ckpt)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path!r} has no state_dict of tensors; is it a checkpoint written by train.py?")
    if any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def load_network(net, path: str, what: str, kind: Optional[str] = "ann") -> None:
    """Read ``path`` safely and load its network (masks, scores, channel-pruned widths) into ``net``."""
    from srsnn.pruning.channels import adopt_shapes
    from srsnn.pruning.masks import load_masked_state_dict

    ckpt = read_checkpoint(path, what)
    sd = network_state_dict(ckpt, path, "net.", kind=kind)
    if ckpt.get(TAG, {}).get("channel_pruned"):
        adopt_shapes(net, sd)
    try:
        load_masked_state_dict(net, sd)
    except UserError as err:
        raise UserError(f"{what} {path!r} does not fit model.net: {err}") from None


def load_weights(net, path: str, what: str = "model.weights") -> None:
    """A network's own state dict (``torch.save(net.state_dict(), path)`` or a ``.safetensors`` file) into ``net``,
    read weights-only; a Lightning checkpoint, a file of another network or an unreadable file is one clear error."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path!r} does not exist; save it with torch.save(net.state_dict(), path)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            sd = load_file(path)
        except Exception as err:
            raise UserError(f"{what} {path!r} is not a readable safetensors file ({err})") from None
    else:
        sd = read_checkpoint(path, what)
    if "state_dict" in sd and "pytorch-lightning_version" in sd:
        raise UserError(
            f"{what} {path!r} is a Lightning checkpoint of a whole run, not a network's state dict; pass it as "
            "--ckpt_path (with the config it was trained with), or save torch.save(net.state_dict(), path)"
        )
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{what} {path!r} is not a state dict of tensors; save it with torch.save(net.state_dict())")
    sd, masks = _torch_pruned(sd)
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:4]}" if missing else "", f"unexpected {unexpected[:4]}" if unexpected else ""]
        parts += (
            [f"{wrong[0]}: {tuple(sd[wrong[0]].shape)} in the file vs {tuple(own[wrong[0]].shape)}"] if wrong else []
        )
        raise UserError(
            f"{what} {path!r} does not fit {type(net).__name__} ({'; '.join(p for p in parts if p)}); pass the "
            "class and init_args the weights were saved from as model.init_args.net"
        )
    net.load_state_dict(sd)
    if masks:
        from srsnn.pruning.masks import add_mask

        modules = dict(net.named_modules())
        for name, mask in masks.items():
            add_mask(modules[name], mask)


def _torch_pruned(sd: dict) -> tuple[dict, dict]:
    """A state dict saved from a net pruned with ``torch.nn.utils.prune`` (``<layer>.weight_orig`` and
    ``<layer>.weight_mask``) -> the plain state dict (weight = orig * mask) and each layer's mask, which the repo's
    own frozen mask then carries (so fine-tuning keeps the pruned weights at zero)."""
    layers = [k.removesuffix(".weight_mask") for k in sd if k.endswith(".weight_mask")]
    masks = {m: sd[f"{m}.weight_mask"] for m in layers if f"{m}.weight_orig" in sd}
    if not masks:
        return sd, {}
    pruned = {f"{m}.{name}" for m in masks for name in ("weight_orig", "weight_mask")}
    out = {k: v for k, v in sd.items() if k not in pruned}
    out.update({f"{m}.weight": sd[f"{m}.weight_orig"] * mask for m, mask in masks.items()})
    return out, masks
