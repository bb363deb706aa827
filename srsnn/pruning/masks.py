"""Unstructured weight masks shared by pruning, conversion, fine-tuning, synop counting and export.

Mechanism: ``torch.nn.utils.parametrize``. ``module.weight`` becomes ``original * mask`` on every forward,
with ``mask`` a buffer of the parametrization. We chose it over ``torch.nn.utils.prune`` because

* a parametrization may own parameters, so HYDRA/HARP scores live next to the mask they produce;
* the effective weight is recomputed on every access, so pruned entries are *exactly* zero whatever SGD,
  momentum or weight decay do to ``original`` (its gradient there is zero anyway: d(w*m)/dw = m);
* it survives ``deepcopy``, DDP and ``state_dict`` round trips with stable key names.

State-dict keys of a masked layer ``L``: ``L.parametrizations.weight.original`` and
``L.parametrizations.weight.0.mask`` (+ ``.0.scores`` / ``.0.rate_logit`` while scores are trained).
``load_masked_state_dict`` loads dense or masked state dicts into dense or masked networks.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from srsnn.errors import UserError

PRUNABLE = (nn.Conv2d, nn.Linear)
_MASK_SUFFIX = ".parametrizations.weight.0.mask"
_ORIG_SUFFIX = ".parametrizations.weight.original"


class WeightMask(nn.Module):
    """Parametrization ``w -> w * m``.

    Fixed mode: ``m`` is the binary ``mask`` buffer. Score mode (HYDRA, Sehwag et al. 2020):
    ``m = top-k(|s|)`` over the layer's scores ``s`` with ``k = keep * n`` and a straight-through gradient
    ``dL/ds = dL/dm``. Rate mode (HARP, Zhao & Wressnegger 2023) additionally learns the layer's keep ratio
    ``r = r_min + (1 - r_min) sigmoid(rate_logit)`` (``r_min``: the per-layer minimum) with HARP's
    straight-through rule ``dL/dr = sum_i dL/dm_i``. ``freeze()`` turns the current top-k into the fixed mask; the
    scores
    stay (frozen) so the parameter list, and hence optimizer checkpoints, do not change mid-run."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())

    @property
    def scored(self) -> bool:
        """True while the mask is computed from trainable scores."""
        return hasattr(self, "scores") and bool(self.scoring)

    def add_scores(self, weight: torch.Tensor, keep: float, learn_rate: bool = False, rate_min: float = 0.0) -> None:
        """HYDRA init: ``s = sqrt(6 / fan_in) * w / max|w|``; ``keep`` = 1 - layer sparsity (HARP: the initial rate,
        its logit clipped to sigmoid^-1 of [0.01, 0.99] as in HARP's code)."""
        fan_in = weight[0].numel()
        scale = math.sqrt(6.0 / fan_in) / weight.abs().max().clamp_min(1e-12)
        self.scores = nn.Parameter((weight.detach() * scale).clone())
        dev = weight.device  # beside the weight: a CPU scalar here would be a CPU parameter of a GPU model
        self.register_buffer("scoring", torch.tensor(True, device=dev))
        self.register_buffer("keep", torch.tensor(float(keep), device=dev))
        if learn_rate:
            self.register_buffer("rate_min", torch.tensor(float(rate_min), device=dev))
            k = min(max((keep - rate_min) / (1 - rate_min), 1e-2), 1 - 1e-2)
            self.rate_logit = nn.Parameter(torch.tensor(math.log(k / (1 - k)), device=dev))

    def keep_ratio(self) -> torch.Tensor:
        if hasattr(self, "rate_logit"):
            return self.rate_min + (1 - self.rate_min) * torch.sigmoid(self.rate_logit)
        return self.keep

    def score_mask(self, k: Optional[int] = None) -> torch.Tensor:
        s = self.scores.abs().flatten()
        n = s.numel()
        r = self.keep_ratio()
        if k is None:
            k = int(min(n, max(1, round(float(r.detach()) * n))))
        hard = topk_mask(s.detach(), k)
        m = hard + (s - s.detach())  # straight-through: forward hard top-k, backward identity to the scores
        if hasattr(self, "rate_logit"):
            m = m + (r - r.detach())  # HARP: the rate gets the sum of the mask's gradient
        return m.view_as(self.scores)

    def freeze(self, k: Optional[int] = None) -> None:
        """End of score training: the top-k (``k`` given, or from the keep ratio) becomes the fixed mask."""
        if hasattr(self, "scores") and (bool(self.scoring) or k is not None):
            # only while scoring: a frozen mask (e.g. HARP's projection onto the global budget) is final
            with torch.no_grad():
                self.mask.copy_((self.score_mask(k) > 0.5).float())
        if hasattr(self, "scores"):
            self.scoring.fill_(False)
            self.scores.requires_grad_(False)
            if hasattr(self, "rate_logit"):
                self.rate_logit.requires_grad_(False)

    def strip_scores(self) -> None:
        """Drop the (frozen) scores: the plain fixed-mask layer that conversion and export use."""
        self.freeze()
        for name in ("scores", "rate_logit", "rate_min", "scoring", "keep"):
            if hasattr(self, name):
                delattr(self, name)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.scored:
            return w * self.score_mask()
        return w * self.mask


def topk_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Binary mask keeping exactly the ``k`` largest entries of a flat tensor (ties broken by index)."""
    mask = torch.zeros_like(values)
    if k > 0:
        mask[torch.topk(values, k, sorted=False).indices] = 1.0
    return mask


# ---- helpers over a network --------------------------------------------------------------------
def prunable_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, PRUNABLE)]


def get_weight_mask(module: nn.Module) -> Optional[WeightMask]:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, WeightMask):
                return p
    return None


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The stored weight, without the mask applied."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def mask_of(module: nn.Module) -> torch.Tensor:
    """The binary mask of a layer (all ones when the layer is unmasked or still scoring)."""
    wm = get_weight_mask(module)
    if wm is None:
        return torch.ones_like(module.weight)
    if wm.scored:
        with torch.no_grad():
            return (wm.score_mask() > 0.5).float()
    return wm.mask


def add_mask(module: nn.Module, mask: Optional[torch.Tensor] = None) -> WeightMask:
    """Attach (or update) the mask of one layer; also zeroes the stored weight where the mask is 0."""
    existing = get_weight_mask(module)
    w = raw_weight(module)
    mask = torch.ones_like(w) if mask is None else mask.to(w.device, torch.float32)
    if mask.shape != w.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(w.shape)}")
    if existing is not None:
        existing.mask.copy_(mask)
        wm = existing
    else:
        wm = WeightMask(mask)
        parametrize.register_parametrization(module, "weight", wm, unsafe=True)
    with torch.no_grad():
        raw_weight(module).mul_(mask)
    return wm


def ensure_masks(net: nn.Module) -> None:
    """Give every prunable layer a (all-ones) mask if it has none."""
    for _, m in prunable_layers(net):
        if get_weight_mask(m) is None:
            add_mask(m)


def masks_from_nonzero(net: nn.Module) -> None:
    """Conversion step: the mask becomes ``W != 0`` (and the previous mask, if any), scores dropped."""
    strip_scores(net)
    for _, m in prunable_layers(net):
        wm = get_weight_mask(m)
        nz = (raw_weight(m) != 0).float()
        add_mask(m, nz if wm is None else nz * mask_of(m))


def iter_masks(net: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, m in prunable_layers(net):
        yield name, mask_of(m)


def sparsity_report(net: nn.Module) -> dict[str, float]:
    """Per-layer and global fraction of pruned weights (``global`` key)."""
    report, zeros, total = {}, 0, 0
    for name, mask in iter_masks(net):
        z = int((mask == 0).sum())
        report[name] = z / mask.numel()
        zeros, total = zeros + z, total + mask.numel()
    if total == 0:
        raise UserError("the network has no prunable (Conv2d / Linear) layers")
    report["global"] = zeros / total
    return report


def clean_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Strip a prefix such as ``net.`` (Lightning) from keys."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def prepare_masks(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Create the masks (and HYDRA/HARP scores) that ``state_dict`` holds, so a strict load succeeds."""
    modules = dict(net.named_modules())
    for key in state_dict:
        if not key.endswith(_MASK_SUFFIX):
            continue
        name = key[: -len(_MASK_SUFFIX)]
        mod = modules.get(name)
        if not isinstance(mod, PRUNABLE):
            continue
        wm = get_weight_mask(mod) or add_mask(mod)
        base = f"{name}.parametrizations.weight.0."
        if base + "scores" in state_dict and not hasattr(wm, "scores"):
            wm.add_scores(raw_weight(mod), keep=1.0, learn_rate=base + "rate_logit" in state_dict)
        elif base + "scores" not in state_dict and hasattr(wm, "scores"):
            wm.strip_scores()


def strip_scores(net: nn.Module) -> None:
    """Freeze every score-based mask and drop its scores (before conversion or export)."""
    for _, m in prunable_layers(net):
        wm = get_weight_mask(m)
        if wm is not None:
            wm.strip_scores()


def load_masked_state_dict(net: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Load a dense or masked state dict into ``net`` with the masks it carries.

    Masks (and HYDRA/HARP scores) named in ``state_dict`` are created first; a dense ``L.weight`` loads into
    a masked layer's ``original``. Raises ``ValueError`` naming missing, unexpected and mis-shaped keys."""
    sd = dict(state_dict)
    prepare_masks(net, sd)
    modules = dict(net.named_modules())
    for name, mod in modules.items():
        if get_weight_mask(mod) is not None and f"{name}.weight" in sd:
            sd[f"{name}{_ORIG_SUFFIX}"] = sd.pop(f"{name}.weight")
            sd.setdefault(f"{name}{_MASK_SUFFIX}", torch.ones_like(sd[f"{name}{_ORIG_SUFFIX}"]))
    problem = state_dict_mismatch(net.state_dict(), sd, strict)
    if problem:
        raise UserError("the checkpoint does not fit this network (another architecture or dataset?): " + problem)
    net.load_state_dict(sd, strict=strict)


def state_dict_mismatch(own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], strict: bool = True) -> str:
    """What keeps ``sd`` from loading into a module whose state dict is ``own`` (shapes; with ``strict``, missing
    and unexpected keys), at most five of each; empty when it fits."""
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(sd) & set(own)
        if sd[k].shape != own[k].shape
    )
    few = lambda items: ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
    parts = [f"shape mismatches: {few(shapes)}"] if shapes else []
    if strict and missing:
        parts.append(f"missing in checkpoint: {few(missing)}")
    if strict and unexpected:
        parts.append(f"not in the model: {few(unexpected)}")
    return " | ".join(parts)
