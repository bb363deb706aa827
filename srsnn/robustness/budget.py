"""The adaptive tier's budget: what runs beyond the paper's protocol, per epsilon, on the survivors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from srsnn.errors import UserError

# the named budgets of ``AttackEvaluation.adaptive`` (``callbacks.evaluation.PRESETS``; ``paper``: the protocol alone)
Preset = Literal["strong", "quick", "paper"]


@dataclass
class AdaptiveBudget:
    """The tier beyond the paper's protocol (per epsilon, on survivors only).

    top_k: strongest gradient paths attacked; steps, restarts: of APGD-CE and APGD-T; ce_restarts: APGD-CE's own
    restarts (None = ``restarts``): whether APGD-CE breaks a borderline sample depends on its random start, and one
    CE run costs what one of APGD-T's targets does (on the digits demo's SNNs, 3 restarts broke what an independent
    attack's APGD-CE broke with other seeds, for ~12 % more evaluation time); max_targets: target classes
    of APGD-T through the strongest path (the most likely wrong classes, at most num_classes - 1); other_targets:
    the same through the other top_k - 1 paths (APGD-T's cost grows with the targets); square_queries: Square's
    budget (0 = skip);
    check_rounds: at most this many convergence rounds: the first re-runs every attack of the tier through the same
    paths with the same targets at 2x steps (Square at 2x queries), the later ones only the (attack, path) pairs that
    broke something so far, at 2x restarts; each with a new seed; they stop after
    two consecutive rounds that break nothing (converged; fewer than 2 rounds can never show it; 0 = off), else at
    the cap (not converged: the audit says so);
    snn_steps, snn_restarts: SA-PGD (Wang et al., arXiv 2512.22522) through the published SNN-specific gradient
    paths, ASSG and HART (SNNs only; their A and gamma chosen on the validation split; snn_restarts 0 = off)."""

    top_k: int = 3
    steps: int = 50
    restarts: int = 1
    max_targets: int = 9
    other_targets: int = 3
    square_queries: int = 1000
    check_rounds: int = 4
    ce_restarts: Optional[int] = None
    snn_steps: int = 100
    snn_restarts: int = 3

    def __post_init__(self):
        if (
            min(self.top_k, self.steps, self.restarts, self.max_targets, self.other_targets, self.apgd_ce_restarts) < 1
            or min(self.square_queries, self.check_rounds, self.snn_restarts) < 0
            or self.snn_steps < 1
        ):
            raise UserError(
                f"adaptive budget: top_k, steps, restarts, ce_restarts, max_targets, other_targets must be >= 1 and "
                f"square_queries, check_rounds, snn_restarts >= 0 and snn_steps >= 1, got {self}"
            )

    @property
    def apgd_ce_restarts(self) -> int:
        return self.restarts if self.ce_restarts is None else self.ce_restarts

    def targets(self, place: int, num_classes: int) -> int:
        """Target classes of APGD-T through the path at ``place`` in the ranking (0 = the strongest)."""
        return max(1, min(self.max_targets if place == 0 else self.other_targets, num_classes - 1))

    def describe(self, members: int, num_classes: int) -> str:
        k = min(self.top_k, members)
        others = f", {self.targets(1, num_classes)} through the next {k - 1}" if k > 1 else ""
        targets = f"{self.targets(0, num_classes)} target classes through the strongest path{others}"
        targeted = (
            f" + APGD-T (DLR; {targets})"
            if num_classes >= 4
            else f" + targeted PGD-CE ({targets}; APGD-T's targeted DLR needs 4 classes, the data has 3)"
            if num_classes == 3
            else " (no targeted attack: with 2 classes the one wrong class is its aim)"
        )
        return (
            f"APGD-CE{targeted}, {self.steps} steps, {self.restarts} restart(s)"
            + (f" (APGD-CE: {self.apgd_ce_restarts})" if self.apgd_ce_restarts != self.restarts else "")
            + f", through the {k} strongest of {members} "
            f"gradient path(s); Square {self.square_queries} queries"
            + (
                f"; convergence check: up to {self.check_rounds} round(s), the first every attack again through the "
                "same paths and targets at 2x steps (Square 2x queries), the later ones the attacks that broke "
                "something at 2x restarts, each with a new seed, until two consecutive rounds break nothing"
                if self.check_rounds
                else ""
            )
        )
