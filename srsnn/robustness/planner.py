"""What the evaluation runs, per epsilon: the paper's protocol, the adaptive tier and the check rounds, as units
(one attack through one gradient path on the samples still robust). The runner (``srsnn.robustness.runner``)
executes them; this module only plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from srsnn.robustness.attacks import targeted_attack
from srsnn.robustness.budget import AdaptiveBudget
from srsnn.robustness.paths import MODEL


@dataclass
class Unit:
    """One attack through one member on the samples still alive for its stream."""

    phase: str  # of the evaluation: paper | rank | adaptive | square | transfer | check
    attack: str
    member: dict
    kwargs: dict = field(default_factory=dict)
    label: str = ""

    @property
    def tag(self) -> str:
        return f"{self.label or self.attack}/{self.member['name']}"


def unit_passes(unit: Unit) -> int:
    """About how many forward passes of the model one sample costs ``unit`` if nothing breaks it (every one but
    Square's with a backward), the deployed model's judgement included: PGD-k k + 1; APGD a clean check, then
    (k + 1) per start (and per target); SA-PGD k + 1 per start; Square its queries."""
    kw, name = unit.kwargs, unit.attack
    if name == "square":
        return kw.get("n_queries", 1000) * kw.get("n_restarts", 1) + 2
    if name in ("fgsm", "rfgsm", "rfgsm_kl"):
        return 2 + (name != "fgsm")
    if name in ("pgd", "tpgd"):
        return kw.get("steps", 10) + 1
    starts = kw.get("n_restarts", 1) * (kw.get("n_classes", 2) - 1 if name in ("apgdt", "pgdt") else 1)
    return (kw.get("steps", 10) + 1) * starts + 1 + (name != "sapgd")


def attack_kwargs(spec: dict) -> dict:
    """An attack spec (``{name: pgd, steps: 10}``) without its name: the keyword arguments of ``make_attack``."""
    return {k: v for k, v in spec.items() if k != "name"}


def label(spec: dict) -> str:
    """``fgsm``, ``pgd10``, ...: an attack spec's name in tables and per-sample records."""
    return spec["name"] if spec["name"] != "pgd" else f"pgd{spec.get('steps', 10)}"


@dataclass
class Planner:
    """members: the gradient paths of the paper's protocol (``[MODEL]`` for an ANN); paper_attacks: its specs;
    adaptive: the tier's budget (None: the protocol alone); snn_paths: the SNN-specific paths SA-PGD attacks
    through; transfer: whether a transfer attack runs."""

    members: list
    paper_attacks: list
    num_classes: int
    adaptive: Optional[AdaptiveBudget] = None
    snn_paths: list = field(default_factory=list)
    transfer: bool = False

    def paper_units(self) -> list[Unit]:
        units = []
        for spec in self.paper_attacks:
            units += [Unit("paper", spec["name"], m, attack_kwargs(spec), label(spec)) for m in self.members]
        return units

    def adaptive_units(self, ranked: list[dict]) -> list[Unit]:
        b = self.adaptive
        if b is None:
            return []
        # APGD-CE through every path first: it is one run per path where APGD-T is one per target, so the samples it
        # breaks cheaply never reach the expensive targeted runs
        top = ranked[: b.top_k]
        units = [
            Unit("adaptive", "apgd_ce", m, dict(steps=b.steps, n_restarts=b.apgd_ce_restarts), "apgd_ce") for m in top
        ]
        # the SNN-specific paths next: one SA-PGD run each, cheaper than APGD-T's targets
        if b.snn_restarts:
            units += [
                Unit("adaptive", "sapgd", m, dict(steps=b.snn_steps, n_restarts=b.snn_restarts), "sapgd")
                for m in self.snn_paths
            ]
        targeted = targeted_attack(self.num_classes)  # APGD-T needs 4 classes; 3: targeted PGD-CE; 2: none
        units += [
            Unit(
                "adaptive",
                targeted,
                m,
                dict(steps=b.steps, n_restarts=b.restarts, n_classes=b.targets(place, self.num_classes) + 1),
                targeted,
            )
            for place, m in enumerate(top)
            if targeted
        ]
        if b.square_queries and b.allocation == "uniform":  # margin allocation: Square runs in the rounds
            units.append(Unit("square", "square", MODEL, dict(n_queries=b.square_queries), "square"))
        return units

    def focus_units(
        self, ranked: list[dict], round_: int, productive: frozenset = frozenset(), workhorse: Optional[tuple] = None
    ) -> list[Unit]:
        """A margin-allocated round (0-based): the tier's (attack, path) pairs that broke something so far at this
        epsilon (``productive``), in the tier's order, with a new seed (APGD-T over ``tier_targets`` targets through
        every path): the first round at 2x steps, the ``workhorse`` (the pair that broke the most) also at 3x starts,
        SA-PGD at ``snn_first_round_starts`` starts of the tier's steps if set, and Square at 2x queries; the later
        rounds at 2x restarts (SA-PGD: a new start of the tier's run) and Square at its queries. Which survivors
        each runs on is the runner's choice (``Evaluator._within_reach``)."""
        b = self.adaptive
        units = []
        for u in self.adaptive_units(ranked):
            if (u.attack, u.member["name"]) not in productive:
                continue
            kw = {**u.kwargs, "seed": round_ + 1}
            if not round_:  # the first round: 2x steps, where a borderline sample's long run finishes what one started
                kw["steps"] = 2 * kw["steps"]
                if (u.attack, u.member["name"]) == workhorse:  # and 3x starts for the pair that breaks the most
                    kw["n_restarts"] = 3 * kw.get("n_restarts", 1)
                if u.attack == "sapgd" and b.snn_first_round_starts:  # many short starts: its breaks are lucky ones
                    kw.update(n_restarts=b.snn_first_round_starts, steps=u.kwargs["steps"])
            elif u.attack != "sapgd":  # later: 2x restarts (SA-PGD a new start of the tier's run)
                kw["n_restarts"] = 2 * kw.get("n_restarts", 1)
            if "n_classes" in kw:
                kw["n_classes"] = b.targets(0, self.num_classes) + 1
            units.append(Unit("check", u.attack, u.member, kw, u.label))
        if b.square_queries:
            # phase "square": the audit weighs what the gradient-free search broke against the white-box attacks
            queries = b.square_queries * (1 if round_ else 2)
            units.append(Unit("square", "square", MODEL, dict(n_queries=queries, seed=round_ + 1), "square"))
        return units

    def check_units(
        self, ranked: list[dict], round_: int, productive: frozenset = frozenset(), workhorse: Optional[tuple] = None
    ) -> list[Unit]:
        """Round ``round_`` (0-based). The first re-runs every attack of the tier through the same paths with the
        same targets at 2x steps and a new seed, and Square at 2x queries with a new seed: "converged" then covers
        every family (whether Square or a white-box attack breaks a borderline sample depends on its seed). The
        later rounds grow the budget where it pays: only the (attack, path) pairs that broke something so far
        (``productive``), at the tier's steps with 2x restarts and a new seed each."""
        b = self.adaptive
        if b is None or not b.check_rounds:
            return []
        if b.allocation == "margin":
            return self.focus_units(ranked, round_, productive, workhorse)
        tier = [u for u in self.adaptive_units(ranked) if u.phase in ("adaptive", "square")]
        units = []
        for u in tier:
            paid = (u.attack, u.member["name"]) in productive
            if round_ and not paid:
                continue
            kw = {**u.kwargs, "seed": round_ + 1}
            if not round_:
                kw.update({"n_queries": 2 * kw["n_queries"]} if u.attack == "square" else {"steps": 2 * kw["steps"]})
            else:
                kw["n_restarts"] = 2 * u.kwargs.get("n_restarts", 1)
            units.append(Unit("check", u.attack, u.member, kw, u.label))
        return units

    def planned_passes(self, epsilons: int) -> tuple[int, int]:
        """(everything but the ranking, the paper protocol): forward passes per sample if no attack broke anything,
        over ``epsilons`` epsilons, every round run and every (attack, path) pair productive. An upper bound: attacks
        run on the survivors only, and the rounds stop early."""
        paper = sum(unit_passes(u) for u in self.paper_units())
        units = self.adaptive_units(self.members)
        tier = sum(unit_passes(u) for u in units)
        everything = self.pairs()
        costliest = max(units, key=unit_passes, default=None)  # the workhorse that costs the most
        workhorse = (costliest.attack, costliest.member["name"]) if costliest else None
        rounds = self.adaptive.check_rounds if self.adaptive else 0
        later = self.check_units(self.members, 1, everything) if rounds > 1 else []  # each round after the first
        checks = sum(unit_passes(u) for u in self.check_units(self.members, 0, everything, workhorse))
        checks += (rounds - 1) * sum(unit_passes(u) for u in later)
        return epsilons * (paper + tier + checks), epsilons * paper

    def pairs(self, ranked: Optional[list[dict]] = None) -> frozenset:
        """Every (attack, path) pair of the tier (through the ``ranked`` paths): the most a round can re-run."""
        return frozenset((u.attack, u.member["name"]) for u in self.adaptive_units(ranked or self.members))

    def units_per_eps(self) -> int:
        n = len(self.paper_units())
        rounds = self.adaptive.check_rounds if self.adaptive else 0
        n += (
            len(self.adaptive_units(self.members))
            + rounds * len(self.check_units(self.members, 0, self.pairs()))
            + bool(self.transfer)
        )
        return n
