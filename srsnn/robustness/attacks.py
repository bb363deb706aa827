"""Adversarial attacks: one factory over torchattacks, plus the single-step KL attack of SNN fine-tuning.

Every model call goes through torchattacks' ``get_logits`` hook; images and epsilon live in [0, 1] pixel space.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Union

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn
from torchattacks.attack import Attack

from srsnn.errors import UserError

Eps = Union[float, str]


def parse_eps(value: Eps, name: str = "epsilon") -> float:
    """``0.0078``, ``"2/255"`` or ``"0.0078"`` -> float in [0, 1]."""
    try:
        eps = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise UserError(f'{name}: cannot read {value!r} as a number (write e.g. 0.0078 or "2/255")') from None
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"{name} must be in [0, 1] (pixel space), got {value!r}")
    return eps


def check_pixel_range(x: torch.Tensor, where: str) -> None:
    """Images must lie in [0, 1]: epsilon, the attacks' clamping and the evaluation's checks are in pixel space, and
    normalisation is the network's first layer. A normalising datamodule would otherwise train silently wrong."""
    if not torch.is_tensor(x) or not x.is_floating_point() or not x.numel():
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UserError(
            f"data: the images of {where} lie in [{lo:.3g}, {hi:.3g}], not [0, 1]; epsilon and the attacks "
            "work in [0, 1] pixel space, so adversarial training and evaluation would be silently wrong. "
            "Return unnormalised images in [0, 1] and let the network normalise: give the datamodule "
            "`mean`/`std` attributes (or set model.init_args.net.init_args.mean / std)"
        )


class RFGSMKL(Attack):
    """R+FGSM on the TRADES KL term (Tramèr et al., ICLR 2018; Özdenizci & Legenstein, TMLR 2024).

    x' = clip(x + alpha * sign(N(0, I)));  x_adv = clip_eps(x' + (eps - alpha) * sign(grad_x' KL(f(x) || f(x'))))
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


class TargetedPGD(Attack):
    """Targeted PGD on cross-entropy (Madry et al., ICLR 2018, towards a target class): the targeted attack where
    APGD-T's targeted DLR loss is undefined. DLR_t = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) needs 4 classes
    (Croce & Hein, ICML 2020), so with 3 classes the targets are attacked with PGD-CE instead.

    The ``n_targets`` most likely wrong classes (by the clean logits) are tried in order, ``n_restarts`` random starts
    each; a sample leaves at its first success, as in APGD-T."""

    def __init__(
        self, model: nn.Module, eps: float, steps: int = 50, n_targets: int = 1, n_restarts: int = 1, seed: int = 0
    ):
        super().__init__("TargetedPGD", model)
        self.eps, self.steps, self.n_targets, self.n_restarts, self.seed = eps, steps, n_targets, n_restarts, seed
        self.supported_mode = ["default"]

    def forward(self, images, labels):
        images, labels = images.clone().detach().to(self.device), labels.clone().detach().to(self.device)
        with torch.no_grad():
            order = self.get_logits(images).argsort(1, descending=True)
        wrong = order[order != labels[:, None]].view(len(labels), -1)  # wrong classes, most likely first
        adv, alive = images.clone(), torch.ones_like(labels, dtype=torch.bool)
        # a fixed seed per call (the check rounds pass new ones), without touching the caller's random stream
        with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for k in range(min(self.n_targets, wrong.shape[1])):
                for _ in range(self.n_restarts):
                    idx = alive.nonzero().flatten()
                    if not len(idx):
                        return adv
                    cand = self.attack_single_run(images[idx], labels[idx], wrong[idx, k])
                    with torch.no_grad():
                        fooled = self.get_logits(cand).argmax(1) != labels[idx]
                    adv[idx[fooled]] = cand[fooled]
                    alive[idx[fooled]] = False
        return adv

    def attack_single_run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One random start of PGD-CE towards ``target`` on ``x`` (the samples still robust)."""
        pgd = torchattacks.PGD(self.model, eps=self.eps, alpha=2.5 * self.eps / self.steps, steps=self.steps)
        pgd.set_mode_targeted_by_function(lambda images, labels: target)
        return pgd(x, y)


class SAPGD(Attack):
    """SA-PGD (Wang et al., "Towards Reliable Evaluation of Adversarial Robustness for SNNs", arXiv 2512.22522):
    L-inf PGD whose step is normalised momentum over an Adam-like second moment, clipped per coordinate.

    g1 = g / mean|g|, g2 = g^2 / mean(g^2) (per sample);  m <- 0.5 m + g1;  v <- 0.8 v + g2;
    x <- Proj_{B(x0, eps) cap [0, 1]}(x + clip(eta m / sqrt(v), -eta, eta)),
    eta = eps at first, halved after fixed fractions of the run (periods 0.22 N, then 0.03 N shorter each, at least
    0.06 N). A random start in the ball; ``n_restarts`` starts, a sample leaving at its first misclassified iterate,
    which is what is returned for it (else the last iterate of its last start)."""

    def __init__(self, model: nn.Module, eps: float, steps: int = 100, n_restarts: int = 1, seed: int = 0):
        super().__init__("SAPGD", model)
        self.eps, self.steps, self.n_restarts, self.seed = eps, steps, n_restarts, seed
        self.supported_mode = ["default"]

    def halvings(self) -> set[int]:
        """The iterations after which eta halves (N = 100: 22, 41, 57, 70, 80, 87, 93, 99)."""
        out, at, k = set(), 0, 0
        while True:
            at += max(round((0.22 - 0.03 * k) * self.steps), round(0.06 * self.steps), 1)
            if at > self.steps:
                return out
            out.add(at)
            k += 1

    def forward(self, images, labels):
        x0, y = images.clone().detach().to(self.device), labels.clone().detach().to(self.device)
        adv, alive = x0.clone(), torch.ones_like(y, dtype=torch.bool)
        with torch.random.fork_rng(devices=[x0.device] if x0.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for _ in range(self.n_restarts):
                idx = alive.nonzero().flatten()
                if not len(idx):
                    break
                found, last = self.attack_single_run(x0[idx], y[idx])
                adv[idx] = last
                alive[idx[found]] = False
        return adv

    def attack_single_run(self, x0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One start on ``x0`` (the samples still robust): which it fooled, and their examples."""
        dims = tuple(range(1, x0.dim()))
        r = 2 * torch.rand_like(x0) - 1
        x = (x0 + self.eps * r / r.abs().amax(dims, keepdim=True).clamp_min(1e-12)).clamp(0, 1)
        found = torch.zeros(len(y), dtype=torch.bool, device=x0.device)
        best = x.clone()
        eta, halve, m, v = self.eps, self.halvings(), None, None
        for i in range(self.steps + 1):
            x.requires_grad_(True)
            logits = self.get_logits(x)
            with torch.no_grad():
                new = (logits.argmax(1) != y) & ~found
                best[new], found = x.detach()[new], found | new
            if i == self.steps or bool(found.all()):
                break
            (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
            with torch.no_grad():
                g1 = g / g.abs().mean(dims, keepdim=True).clamp_min(1e-12)
                g2 = g * g / (g * g).mean(dims, keepdim=True).clamp_min(1e-12)
                m = g1 if m is None else 0.5 * m + g1
                v = g2 if v is None else 0.8 * v + g2
                step = (eta * m / (v.sqrt() + 1e-12)).clamp(-eta, eta)
                x = torch.min(torch.max(x.detach() + step, x0 - self.eps), x0 + self.eps).clamp(0, 1)
            if i + 1 in halve:
                eta /= 2
        return found, torch.where(found.view(-1, *[1] * len(dims)), best, x.detach())


ATTACKS = ("fgsm", "pgd", "tpgd", "rfgsm", "rfgsm_kl", "apgd_ce", "apgd_dlr", "apgdt", "pgdt", "sapgd", "square")
MIN_CLASSES = {"apgd_dlr": 3, "apgdt": 4}  # DLR divides by z_pi1 - z_pi3; the targeted DLR by z_pi1 - (z_pi3 + z_pi4)/2


def targeted_attack(num_classes: int) -> str | None:
    """The adaptive tier's targeted attack for a class count: APGD-T (targeted DLR) from 4 classes, targeted PGD-CE
    with 3, none with 2 (the one wrong class is what the untargeted attacks already aim at)."""
    return "apgdt" if num_classes >= 4 else "pgdt" if num_classes == 3 else None


def make_attack(
    name: str,
    model: nn.Module,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    n_queries: int = 1000,
    seed: int = 0,
    n_restarts: int = 1,
    n_classes: int = 10,
) -> Attack:
    """A torchattacks attack by name. PGD step size defaults to 2.5 * eps / steps (Madry et al.).
    ``apgdt`` is targeted APGD-DLR over the ``n_classes - 1`` most likely wrong classes (Croce & Hein, 2020), ``pgdt``
    targeted PGD-CE over as many (``TargetedPGD``)."""
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
        return torchattacks.APGD(model, eps=eps, steps=steps, loss="ce", seed=seed, n_restarts=n_restarts)
    if name == "apgd_dlr":
        return torchattacks.APGD(model, eps=eps, steps=steps, loss="dlr", seed=seed, n_restarts=n_restarts)
    if name == "apgdt":
        return torchattacks.APGDT(model, eps=eps, steps=steps, seed=seed, n_restarts=n_restarts, n_classes=n_classes)
    if name == "pgdt":
        return TargetedPGD(model, eps=eps, steps=steps, n_targets=n_classes - 1, n_restarts=n_restarts, seed=seed)
    if name == "sapgd":
        return SAPGD(model, eps=eps, steps=steps, n_restarts=n_restarts, seed=seed)
    if name == "square":
        return torchattacks.Square(model, eps=eps, n_queries=n_queries, seed=seed, n_restarts=n_restarts)
    raise UserError(f"unknown attack {name!r}; choose one of {ATTACKS}")
