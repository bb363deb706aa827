"""Adversarial training losses on clean logits z = f(x) and adversarial logits z~ = f(x~); p = softmax(z),
p~ = softmax(z~). The inner maximisation (x~) is the caller's.

* PGD-AT (Madry et al., ICLR 2018): ``CE(z~, y)``.
* TRADES (Zhang et al., ICML 2019): ``CE(z, y) + beta * KL(p || p~)`` (batch mean); paper: beta = 2.
* MART (Wang et al., ICLR 2020): ``CE(z~, y) - log(1 - max_{k != y} p~_k) + beta * mean_i KL(p_i || p~_i) (1 -
p_i[y_i])``
  — boosted CE on the adversarial example plus a KL weighted towards misclassified samples; beta = 4 in the
  reference code (IGITUGraz/RobustSNNConversion), 6 in MART's paper.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Objective = Literal["standard", "pgd_at", "trades", "mart"]
InnerAttack = Literal["pgd", "rfgsm"]  # PGD (TPGD for TRADES) or single-step R+FGSM


def trades_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * kl


def mart_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    p, p_adv = F.softmax(logits, dim=1), F.softmax(logits_adv, dim=1)
    wrong = p_adv.scatter(1, y[:, None], -1.0).max(dim=1).values  # the most likely wrong class under attack
    boosted = F.cross_entropy(logits_adv, y) - torch.log((1 - wrong).clamp_min(1e-12)).mean()
    kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(p_adv.clamp_min(1e-12)))).sum(dim=1)
    return boosted + beta * (kl * (1 - p.gather(1, y[:, None]).squeeze(1))).mean()
