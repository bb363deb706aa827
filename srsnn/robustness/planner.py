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
        if b.square_queries:
            units.append(Unit("square", "square", MODEL, dict(n_queries=b.square_queries), "square"))
        return units

    def check_units(self, ranked: list[dict], round_: int, productive: frozenset = frozenset()) -> list[Unit]:
        """Round ``round_`` (0-based). The first re-runs every attack of the tier through the same paths with the
        same targets at 2x steps and a new seed, and Square at 2x queries with a new seed: "converged" then covers
        every family (whether Square or a white-box attack breaks a borderline sample depends on its seed). The
        later rounds grow the budget where it pays: only the (attack, path) pairs that broke something so far
        (``productive``), at the tier's steps with 2x restarts and a new seed each."""
        b = self.adaptive
        if b is None or not b.check_rounds:
            return []
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

    def units_per_eps(self) -> int:
        n = len(self.paper_units())
        rounds = self.adaptive.check_rounds if self.adaptive else 0
        n += (
            len(self.adaptive_units(self.members))
            + rounds * len(self.check_units(self.members, 0))
            + bool(self.transfer)
        )
        return n
