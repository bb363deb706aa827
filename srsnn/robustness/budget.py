"""The adaptive tier's budget: what runs beyond the paper's protocol, per epsilon, on the survivors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from srsnn.errors import UserError

# the named budgets of ``AttackEvaluation.adaptive`` (``callbacks.evaluation.PRESETS``; ``paper``: the protocol alone)
Preset = Literal["strong", "thorough", "fast", "quick", "paper"]
Allocation = Literal["margin", "uniform"]


@dataclass
class AdaptiveBudget:
    """The tier beyond the paper's protocol (per epsilon, on survivors only).

    top_k: strongest gradient paths attacked; steps, restarts: of APGD-CE and APGD-T; ce_restarts: APGD-CE's own
    restarts (None = ``restarts``); max_targets: target classes of APGD-T through the strongest path (the most likely
    wrong classes, at most num_classes - 1); other_targets: the same through the other top_k - 1 paths;
    snn_steps, snn_restarts: SA-PGD (Wang et al., arXiv 2512.22522) through the published SNN-specific gradient
    paths, ASSG and HART (SNNs only; their A and gamma chosen on the validation split; snn_restarts 0 = off);
    snn_first_round_starts: SA-PGD's starts, of snn_steps each, in the first margin-allocated round (0 = as the rule
    below says): its breaks come from lucky starts, so a survivor that falls to one start in two can outlive a few;
    square_queries: Square's budget (0 = skip); check_rounds: at most this many rounds after the tier (0 = off); they
    stop when converged: the 95 % upper bound on what one more round would break, from what the rounds after the
    first broke (``srsnn.robustness.audit.next_round_bound``), is at most ``tolerance`` (a fraction of the samples
    evaluated), else at the cap (not converged); verify_rounds: rounds run past that stop to check the rule (their
    breaks count in the worst case and are reported apart).

    allocation: what the rounds spend their passes on.
    ``margin`` (per-sample allocation, after A^3's online discarding, Liu et al., CVPR 2022): every tier and round
    attack books, per sample, the smallest gap g = z_y - max_{k != y} z_k of the deployed model over its example and
    every start's best iterate. A survivor is *within reach* when g < reach * g_clean. Each round re-runs the (attack,
    path) pairs that broke something so far at this epsilon with a new seed (APGD-T over ``tier_targets`` targets
    through each path), the first at 2x steps, the later ones at 2x restarts (SA-PGD: one new start), on the
    survivors within reach; in the first round the tier's most productive pair (the workhorse) also at 3x starts, on
    the survivors within twice the reach;
    Square runs in the rounds only (2x queries in the first), on the survivors within reach and on those the
    gradient attacks could not move (g above 0.9 g_clean: masked gradients look like this).
    ``uniform``: the first round re-runs every attack of the tier (Square included) at 2x steps (Square 2x
    queries) on every survivor, the later ones the (attack, path) pairs that broke something so far at 2x
    restarts.
    tier_targets: APGD-T's targets through the strongest path in the margin allocation's tier and rounds;
    rank_samples: the ranking attacks the clean-correct samples among the first ``rank_samples`` of the test subset
    (0 = all); tune_samples: validation images that choose ASSG's A and HART's gamma."""

    top_k: int = 3
    steps: int = 50
    restarts: int = 1
    max_targets: int = 9
    other_targets: int = 3
    square_queries: int = 1000
    check_rounds: int = 3
    ce_restarts: Optional[int] = 3
    snn_steps: int = 100
    snn_restarts: int = 3
    allocation: Allocation = "uniform"
    reach: float = 0.2
    rank_samples: int = 0
    tune_samples: int = 100
    tier_targets: int = 3
    tolerance: float = 0.015
    verify_rounds: int = 0
    snn_first_round_starts: int = 0

    def __post_init__(self):
        if (
            min(self.top_k, self.steps, self.restarts, self.max_targets, self.other_targets, self.apgd_ce_restarts) < 1
            or min(self.snn_steps, self.tier_targets, self.tune_samples) < 1
            or min(self.square_queries, self.check_rounds, self.snn_restarts, self.rank_samples, self.verify_rounds) < 0
            or self.snn_first_round_starts < 0
            or not 0 <= self.tolerance < 1
            or self.allocation not in ("margin", "uniform")
            or not 0 < self.reach <= 1
        ):
            raise UserError(
                "adaptive budget: top_k, steps, restarts, ce_restarts, max_targets, other_targets, snn_steps, "
                "tier_targets, tune_samples must be >= 1, square_queries, check_rounds, snn_restarts, rank_samples, "
                f"verify_rounds, snn_first_round_starts >= 0, allocation margin or uniform, 0 < reach <= 1 and "
                f"0 <= tolerance < 1, got {self}"
            )
        if self.snn_first_round_starts and self.allocation != "margin":  # else it would be ignored without a word
            raise UserError(
                "adaptive budget: snn_first_round_starts applies to allocation margin (the strong preset's rounds); "
                "allocation uniform reruns SA-PGD with the tier's starts: set allocation: margin or drop the key"
            )

    @property
    def apgd_ce_restarts(self) -> int:
        return self.restarts if self.ce_restarts is None else self.ce_restarts

    @property
    def _rule(self) -> str:
        past = f"; {self.verify_rounds} round(s) past the stop check it" if self.verify_rounds else ""
        return (
            "the 95 % bound on what another round would break, from the rounds after the first, at most "
            f"{self.tolerance:g} of the samples{past}"
        )

    def targets(self, place: int, num_classes: int) -> int:
        """Target classes of APGD-T through the path at ``place`` in the ranking (0 = the strongest)."""
        if self.allocation == "margin":
            k = min(self.tier_targets, self.max_targets) if place == 0 else self.other_targets
        else:
            k = self.max_targets if place == 0 else self.other_targets
        return max(1, min(k, num_classes - 1))

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
        tier = (
            f"APGD-CE{targeted}, {self.steps} steps, {self.restarts} restart(s)"
            + (f" (APGD-CE: {self.apgd_ce_restarts})" if self.apgd_ce_restarts != self.restarts else "")
            + f", through the {k} strongest of {members} gradient path(s)"
        )
        if self.allocation == "margin":
            rounds = (
                f"; up to {self.check_rounds} round(s), each with a new seed, until converged ({self._rule}): the "
                "(attack, path) pairs that broke something so far (the first at 2x steps, the later "
                f"at 2x restarts; APGD-T over {self.targets(0, num_classes)} targets through each path) on the "
                f"survivors within reach (closest gap below {self.reach:g}x the clean gap), in the first round the "
                "tier's most productive at 3x starts within twice the reach"
                + (f", SA-PGD at {self.snn_first_round_starts} starts" if self.snn_first_round_starts else "")
                + "; Square "
                f"({self.square_queries} queries, 2x in the first round) on those within reach and those the "
                "gradient attacks could not move"
            )
            return tier + (rounds if self.check_rounds else "")
        return (
            tier
            + f"; Square {self.square_queries} queries"
            + (
                f"; convergence check: up to {self.check_rounds} round(s), the first every attack again through the "
                "same paths and targets at 2x steps (Square 2x queries), the later ones the attacks that broke "
                f"something at 2x restarts, each with a new seed, until converged ({self._rule})"
                if self.check_rounds
                else ""
            )
        )
