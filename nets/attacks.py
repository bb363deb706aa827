"""Adversarial attacks: one factory over torchattacks, plus the single-step KL attack of SNN fine-tuning.

Every model call goes through torchattacks' ``get_logits`` hook; images and epsilon live in [0, 1] pixel space.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Union

import torch
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack
from torch import nn

from .errors import UserError

Eps = Union[float, str]


def parse_eps(value: Eps, name: str = "epsilon") -> float:
    """``0.0078``, ``"2/255"`` or ``"0.0078"`` -> float in [0, 1]."""
    try:
        eps = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{name}: cannot read {value!r} as a number (write e.g. 0.0078 or \"2/255\")") from None
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"{name} must be in [0, 1] (pixel space), got {value!r}")
    return eps


class RFGSMKL(Attack):
    """R+FGSM on the TRADES KL term (Tramèr et al., ICLR 2018; Özdenizci & Legenstein, TMLR 2024).

    x' = clip(x + alpha * sign(N(0, I)));  x_adv = clip_eps(x' + (eps - alpha) * sign(grad_x' KL(f(x') || f(x))))
    """

    def __init__(self, model: nn.Module, eps: float = 2 / 255, alpha: float = 1 / 255):
        super().__init__("RFGSMKL", model)
        if not 0 <= alpha <= eps:
            raise UserError(f"RFGSMKL needs 0 <= alpha <= eps, got alpha={alpha}, eps={eps}")
        self.eps, self.alpha = eps, alpha
        self.supported_mode = ["default"]

    def forward(self, images, labels=None):
        images = images.clone().detach().to(self.device)
        with torch.no_grad():
            p_clean = F.softmax(self.get_logits(images), dim=1)
        x = (images + self.alpha * torch.randn_like(images).sign()).clamp(0, 1).detach().requires_grad_(True)
        loss = F.kl_div(F.log_softmax(self.get_logits(x), dim=1), p_clean, reduction="batchmean")
        grad = torch.autograd.grad(loss, x)[0]
        adv = x.detach() + (self.eps - self.alpha) * grad.sign()
        adv = torch.min(torch.max(adv, images - self.eps), images + self.eps)
        return adv.clamp(0, 1).detach()


ATTACKS = ("fgsm", "pgd", "tpgd", "rfgsm", "rfgsm_kl", "apgd_ce", "apgd_dlr", "square")


def make_attack(name: str, model: nn.Module, eps: float, steps: int = 10, alpha: float | None = None,
                random_start: bool = True, n_queries: int = 1000, seed: int = 0) -> Attack:
    """A torchattacks attack by name. PGD step size defaults to 2.5 * eps / steps (Madry et al.)."""
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    if name == "tpgd":
        return torchattacks.TPGD(model, eps=eps, alpha=alpha, steps=steps)
    if name == "rfgsm":
        return torchattacks.RFGSM(model, eps=eps, alpha=eps / 2, steps=1)
    if name == "rfgsm_kl":
        return RFGSMKL(model, eps=eps, alpha=eps / 2)
    if name == "apgd_ce":
        return torchattacks.APGD(model, eps=eps, steps=steps, loss="ce", seed=seed)
    if name == "apgd_dlr":
        return torchattacks.APGD(model, eps=eps, steps=steps, loss="dlr", seed=seed)
    if name == "square":
        return torchattacks.Square(model, eps=eps, n_queries=n_queries, seed=seed)
    raise UserError(f"unknown attack {name!r}; choose one of {ATTACKS}")


# ---- the ensemble of gradient paths ------------------------------------------------------------------
def paper_ensemble() -> list[dict]:
    """The 19 gradient paths of Schmolli et al. (CPAL 2025) / Özdenizci & Legenstein (TMLR 2024):
    triangular x5, exponential x6, rectangular x5, straight-through, BPTR, and the ReLU network."""
    members = [{"mode": "spike", "surrogate": {"name": "triangular", "gamma": g}} for g in (0.25, 0.5, 1, 2, 3)]
    members += [{"mode": "spike", "surrogate": {"name": "exponential", "gamma_d": d, "gamma_s": s}}
                for d in (0.3, 1.0) for s in (0.5, 1.0, 2.0)]
    members += [{"mode": "spike", "surrogate": {"name": "rectangular", "gamma": g}} for g in (0.25, 0.5, 1, 2, 4)]
    members += [{"mode": "spike", "surrogate": {"name": "straight_through"}}, {"mode": "bptr"}, {"mode": "relu"}]
    for m in members:
        sg = m.get("surrogate")
        args = ",".join(f"{v:g}" for k, v in (sg or {}).items() if k != "name")
        m["name"] = m["mode"] if sg is None else sg["name"] + (f"({args})" if args else "")
    return members


def ensemble_attack(model: nn.Module, attack: str, x: torch.Tensor, y: torch.Tensor, eps: float,
                    members: list[dict] | None = None, per_member: bool = False, **attack_kwargs):
    """Attack ``model`` through every gradient path; a sample is robust only if every member fails.

    Adversarial examples crafted on a member are always judged by the deployed model (the spiking forward).
    With ``per_member=False`` members run only on samples still unbroken (early exit). Returns
    ``(robust, {member: correct})``, boolean tensors over the batch (per-member entries cover the samples that
    member was run on; with ``per_member=True`` that is all of them)."""
    from .snn import gradient_path

    members = members or [{"name": "model", "mode": None}]
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    per: dict[str, torch.Tensor] = {}
    for member in members:
        idx = torch.arange(len(x), device=x.device) if per_member else torch.nonzero(robust).flatten()
        if idx.numel() == 0:
            break
        ctx = gradient_path(model, member["mode"], member.get("surrogate")) if member.get("mode") else _null()
        with ctx, torch.enable_grad():
            adv = make_attack(attack, model, eps, **attack_kwargs)(x[idx], y[idx])
        with torch.no_grad():
            correct = model(adv).argmax(1) == y[idx]
        per[member["name"]] = correct
        robust[idx] &= correct
    return robust, per


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, members: list[dict] | None = None) -> torch.Tensor:
    """Per-sample L1 norm of the CE input gradient, maximised over the members (zero = masked gradient)."""
    from .snn import gradient_path

    best = torch.zeros(len(x), device=x.device)
    for member in members or [{"mode": None}]:
        ctx = gradient_path(model, member["mode"], member.get("surrogate")) if member.get("mode") else _null()
        xi = x.clone().requires_grad_(True)
        with ctx, torch.enable_grad():
            loss = F.cross_entropy(model(xi), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xi)
        best = torch.maximum(best, g.abs().flatten(1).sum(1))
    return best
