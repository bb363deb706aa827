"""Robust accuracy you can publish: the paper's protocol, an adaptive tier beyond it, and the per-sample worst case.

Plain torch + torchattacks (no Lightning; ``callbacks.AttackEvaluation`` is a thin wrapper). For every epsilon
(ascending), on a fixed set of samples:

1. **paper protocol** (Schmolli et al., CPAL 2025; Özdenizci & Legenstein, TMLR 2024): every configured attack
   (FGSM, PGD-10, ...) through every gradient path in ``members``; a sample is robust against an attack only if
   every member fails. Reported per attack and labelled as the paper's protocol.
2. **ranking** (once, at the largest epsilon): each member's own PGD on every sample, no early exit: how many
   samples each path breaks on its own; the strongest paths get the adaptive tier. Its breaks count in the worst
   case at that epsilon.
3. **adaptive tier**, on the samples nothing has broken yet: APGD-CE and targeted APGD-DLR (Croce & Hein, ICML
   2020; ``steps`` steps, ``restarts`` restarts; APGD-T's targets are the most likely wrong classes in order of the
   logit margin, ``max_targets`` through the strongest path and ``other_targets`` through the others, and a sample
   leaves as soon as one target fools it) through the ``top_k`` strongest members, then Square (Andriushchenko et
   al., ECCV 2020; ``square_queries``) on the deployed forward, then a transfer attack from another model.
4. **convergence check** (``check_rounds``): rounds that re-run the tier's white-box attacks through the *same*
   paths with the same targets at 2x steps and a new seed, and Square at 2x queries with a new seed (cheap, and
   it finds what masked gradients hide), then the productive ones again with new seeds, on the survivors, until
   converged (the 95 % Poisson bound on what one more round would break is within the tolerance,
   ``srsnn.robustness.audit.confidence``) or the rounds run out (not converged: the audit says so).

Iterate-selecting attacks (APGD, APGD-T) keep the iterate that fools the model they see. Through a path whose
forward is not the deployed one (the ReLU network) they see ``DeployedJudge``: the deployed logits with the path's
gradient, so they keep what fools the *spiking* network.

The headline number per epsilon is the **per-sample worst case** over everything run. A sample broken at a
smaller epsilon stays broken at a larger one (its adversarial example lies in the larger ball), so the worst
case is non-increasing in epsilon and the adaptive tier only runs on survivors. Every adversarial example is
checked to lie in the epsilon-ball and in [0, 1], and is judged by the deployed model (for an SNN: the spiking
forward), whatever member crafted it. Each rank of a DDP run evaluates its own shard; ``reduce`` sums counts
over ranks, so the member ranking and every number are the same as on one process.
"""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace
from typing import Any, Callable, Optional

import torch
from torch import nn

from srsnn.errors import UserError
from srsnn.robustness.attacks import MIN_CLASSES, check_pixel_range, make_attack
from srsnn.robustness.audit import confidence
from srsnn.robustness.budget import AdaptiveBudget
from srsnn.robustness.cost import PassCounter
from srsnn.robustness.keyed import keyed_random, mix
from srsnn.robustness.paths import MODEL, DeployedJudge, changes_forward, padded, use_path
from srsnn.robustness.planner import Planner, Unit, attack_kwargs, label, unit_passes
from srsnn.robustness.results import Examples, margins
from srsnn.snn.network import reset_path_state

STUCK = 0.9  # margin allocation: a survivor whose closest gap stays above this share of its clean gap gets Square


class Evaluator:
    """Args:
    model: the deployed network (inputs in [0, 1]); eval mode is the caller's business.
    members: gradient paths (``srsnn.robustness.attacks.paper_ensemble()``) or None for the model itself (ANNs).
    epsilons: budgets in pixel space. paper_attacks: ``[{name: fgsm}, {name: pgd, steps: 10}, ...]``.
    num_classes: for APGD-T's targets. adaptive: the tier beyond the paper (None = the paper's protocol only).
    ranking_attack: the attack that ranks members (default PGD-10). transfer: ``(name, source model)`` or None.
    reduce: sums a tensor over DDP ranks (identity on one process). progress: a tqdm-like factory or None.
    batch_size: attack batch size. stop: polled between batches (DDP: a deferred signal; ``_agree_on_stop``).
    snn_paths: the SNN-specific gradient paths (``srsnn.robustness.attacks.snn_attack_paths``) the tier attacks with
    SA-PGD; empty for ANNs. counter: counts the passes per phase. announce: a log line's sink (rank 0), for the
    first batch's timing.
    """

    def __init__(
        self,
        model: nn.Module,
        members: Optional[list[dict]],
        epsilons: list[float],
        paper_attacks: list[dict],
        num_classes: int,
        adaptive: Optional[AdaptiveBudget] = None,
        ranking_attack: Optional[dict] = None,
        transfer: Optional[tuple[str, nn.Module]] = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
        progress=None,
        batch_size: int = 100,
        stop: Optional[Callable[[], bool]] = None,
        snn_paths: Optional[list[dict]] = None,
        counter: Optional[PassCounter] = None,
        announce: Optional[Callable[[str], None]] = None,
    ):
        # a sample's result must not depend on how many share its batch (``PaddedRows``): the same on any process count
        self.model, self.members = padded(model), members or [MODEL]
        self.epsilons, self.paper_attacks = sorted(epsilons), [dict(a) for a in paper_attacks]
        self.num_classes, self.adaptive = num_classes, adaptive
        self.transfer = (transfer[0], padded(transfer[1])) if transfer else None
        self.ranking_attack = dict(ranking_attack or {"name": "pgd", "steps": 10})
        if num_classes < 2:
            raise UserError(f"the evaluation needs at least 2 classes, the data has {num_classes}")
        for spec in [*self.paper_attacks, self.ranking_attack]:
            if num_classes < MIN_CLASSES.get(spec["name"], 2):
                raise UserError(
                    f"attack {spec['name']} needs at least {MIN_CLASSES[spec['name']]} classes (its DLR "
                    f"loss reads the 3rd/4th largest logit); this data has {num_classes}: use apgd_ce or pgd"
                )
        self.reduce, self.progress, self.batch_size, self.stop = reduce, progress, batch_size, stop
        self._stopping = False  # this rank was asked to stop: it skips its remaining batches
        self.keys: list[int] = []  # the global index of each sample of the shard ``run`` attacks
        self.snn_paths = list(snn_paths or [])  # ASSG, HART: attacked with SA-PGD in the adaptive tier
        self.plan = Planner(self.members, self.paper_attacks, num_classes, adaptive, self.snn_paths, bool(transfer))
        self.seconds: dict[str, float] = {}  # wall time per phase:attack (this rank)
        self.counter = counter  # passes of the model per phase (``srsnn.robustness.cost``), or None
        self.announce, self._timed = announce, False  # the first batch's timing is said once (``announce``)
        self.examples = Examples()  # the adversarial example of every break (``srsnn.export.card``)
        self.ranked: list[dict] = list(self.members)

    def planned_passes(self) -> tuple[int, int]:
        """(everything, the paper protocol): forward passes per sample at most (``Planner.planned_passes``), the
        ranking included."""
        everything, paper = self.plan.planned_passes(len(self.epsilons))
        if self._ranks():
            everything += len(self.members) * unit_passes(
                Unit("rank", self.ranking_attack["name"], MODEL, attack_kwargs(self.ranking_attack))
            )
        return everything, paper

    def _ranks(self) -> bool:
        return self.adaptive is not None and len(self.members) > 1

    # -- running ----------------------------------------------------------------------------------------------
    def correct_after(self, unit: Unit, x: torch.Tensor, y: torch.Tensor, eps: float, keys=None):
        """Craft on ``unit.member`` (or the transfer source), judge on the deployed model. Returns per sample whether
        it is still classified correctly and, for the margin allocation (``book``), the smallest gap
        z_y - max_{k != y} z_k of the deployed model over the example and every start's best iterate (else None).
        ``keys``: the samples' global indices; their random starts derive from (the run, the sample) alone."""
        source, member = (self.transfer[1] if unit.phase == "transfer" else self.model), unit.member
        if unit.phase in ("adaptive", "check") and changes_forward(member):
            source, member = DeployedJudge(self.model, member), MODEL
        attack = make_attack(unit.attack, source, eps, **unit.kwargs)
        seed = mix(unit.phase, unit.label or unit.attack, unit.member["name"], f"{eps:.6g}", unit.kwargs.get("seed", 0))
        fresh = lambda: reset_path_state(source)  # noqa: E731 - every start begins ASSG's running means afresh
        book = self._books(unit)
        iterates: list = []
        note = (lambda rows, it: iterates.append((rows, it))) if book else None  # noqa: E731
        keyed = keyed_random(attack, x, keys, seed, fresh, note) if keys is not None else contextlib.nullcontext()
        with use_path(source, member), torch.enable_grad(), keyed:
            adv = attack(x, y)
        if (adv - x).abs().max() > eps + 1e-5 or adv.min() < -1e-6 or adv.max() > 1 + 1e-6:
            raise RuntimeError(f"{unit.tag}: adversarial example outside the eps={eps:g} ball or [0, 1]")
        with torch.no_grad():
            logits = self.model(adv)
            gap = -margins(logits, y) if book else None
            at = {k: i for i, k in enumerate(keys)} if iterates else {}
            for rows, it in iterates:  # the starts' best iterates: how close each came where it failed
                pos = torch.tensor([at[k] for k in rows], dtype=torch.long, device=x.device)
                gap[pos] = torch.minimum(gap[pos], -margins(self.model(it), y[pos]))
        if keys is not None and unit.phase != "audit":  # the evaluation's breaks, not the audit's probes
            self.examples.keep(keys, eps, adv, logits, y)
        return logits.argmax(1) == y, gap

    def _books(self, unit: Unit) -> bool:
        """Whether ``unit``'s margins are booked: the tier's and the rounds' under the margin allocation."""
        return (
            self.adaptive is not None
            and self.adaptive.allocation == "margin"
            and unit.phase in ("adaptive", "check", "square")
        )

    def _run_unit(self, unit: Unit, x, y, alive: torch.Tensor, eps: float, round_suffix: str = "") -> torch.Tensor:
        """Attack the alive samples in batches; returns the boolean mask of samples this unit broke (and books their
        closest gaps in ``self.gap`` under the margin allocation)."""
        counting = self.counter.phase(f"{unit.phase}{round_suffix}:{unit.attack}") if self.counter else None
        with counting or contextlib.nullcontext():
            return self._attack_alive(unit, x, y, alive, eps)

    def _attack_alive(self, unit: Unit, x, y, alive: torch.Tensor, eps: float) -> torch.Tensor:
        t0 = time.perf_counter()
        broke = torch.zeros_like(alive)
        idx = torch.nonzero(alive).flatten()
        keys = self.keys if len(self.keys) == len(x) else list(range(len(x)))
        for i in range(0, idx.numel(), self.batch_size):
            self._stopping = self._stopping or bool(self.stop and self.stop())
            if self._stopping:
                break
            j = idx[i : i + self.batch_size]
            correct, gap = self.correct_after(unit, x[j], y[j], eps, [keys[k] for k in j.tolist()])
            broke[j] = ~correct
            self._time_first_batch(time.perf_counter() - t0, len(x))
            if gap is not None:
                self.gap[j] = torch.minimum(self.gap[j], gap)
        key = f"{unit.phase}:{unit.attack}"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
        self._agree_on_stop(x.device)
        return broke

    def _time_first_batch(self, seconds: float, samples: int) -> None:
        """Once, after the first attack batch: the time per forward pass it took and what the plan costs at most at
        that rate (``announce``, rank 0's log)."""
        if self.announce is None or self.counter is None or self._timed:
            return
        self._timed = True
        done = self.counter.counts.get(self.counter.current, [0, 0])[0] or 1  # this batch's forwards
        at_most, _ = self.planned_passes()
        self.announce(
            f"first attack batch: {1e3 * seconds / done:.2f} ms per pass (forward with its backward) on this "
            f"process; the plan costs at most {at_most * samples * seconds / done / 60:.1f} min here if nothing broke "
            "(attacks run on survivors only, so it is usually far less)"
        )

    def _agree_on_stop(self, device: torch.device) -> None:
        """With a deferred stop (DDP): every rank runs the same units in the same order, so after each one they share
        their stop flags in one collective and, if any rank was asked to stop, all raise KeyboardInterrupt here, at
        the same point: the epsilon in progress is dropped, the finished ones are kept, and the collectives that
        follow (the per-sample gather, the writing) match on every rank."""
        if self.stop is None:
            return
        flag = self.reduce(torch.tensor([float(self._stopping)], dtype=torch.float64, device=device))
        if float(flag[0]) > 0:
            raise KeyboardInterrupt

    def run(self, x: torch.Tensor, y: torch.Tensor, keys: Optional[list[int]] = None) -> dict[str, Any]:
        """Per-sample results on ``x, y`` (this rank's shard). An interrupt (Ctrl-C, SIGTERM raised as
        KeyboardInterrupt) keeps every finished epsilon and sets ``interrupted``."""
        n = len(y)
        self.keys = list(range(n)) if keys is None else list(keys)  # global sample indices: the random starts' keys
        check_pixel_range(x, "the evaluation's test images")  # a data problem, not an attack's
        clean = self.clean_correct(x, y)
        margin = self.adaptive is not None and self.adaptive.allocation == "margin" and self.adaptive.check_rounds
        # z_y - max_{k != y} z_k on the clean images: what "within reach" scales (margin-allocated rounds only)
        self.clean_gap = -margins(self._logits(x), y) if margin else None
        out: dict[str, Any] = {
            "n": n,
            "clean": clean.tolist(),
            "eps": {},
            "interrupted": None,
            "units_done": 0,
            "ranking": {},
        }
        worst_alive = clean.clone()
        total = self.plan.units_per_eps() * len(self.epsilons) + (len(self.members) if self._ranks() else 0)
        bar = self.progress(total=total) if self.progress else None
        try:
            self.ranked, out["ranking"] = self._ranking(x, y, clean, bar, out)
            for eps in self.epsilons:
                res, worst_alive = self._run_eps(x, y, eps, clean, worst_alive, bar, out)
                out["eps"][f"{eps:.6g}"] = res
        except KeyboardInterrupt:
            done = list(out["eps"])
            out["interrupted"] = f"interrupted after {len(done)} of {len(self.epsilons)} epsilon(s)" + (
                f" (finished: {', '.join(done)})" if done else ""
            )
        finally:
            if bar is not None:
                bar.close()
        return out

    def _ranking(self, x, y, clean, bar, out) -> tuple[list[dict], dict[str, Any]]:
        """Every member's own ``ranking_attack`` at the largest epsilon (most breaks, so the clearest ranking) on
        every clean-correct sample: strongest first (paper order on ties), and each member's robust accuracy.
        ``self.ranking_breaks`` keeps, per sample, the first member whose example fooled the deployed model: those
        examples count in the worst case at that epsilon."""
        self.ranking_breaks = [None] * len(y)
        if not self._ranks():
            return list(self.members), {}
        eps, first = self.epsilons[-1], self.adaptive.rank_samples
        on = (
            clean & (torch.tensor(self.keys, device=x.device) < first) if first else clean
        )  # by global index: any shard
        broke_by = []
        for m in self.members:
            unit = Unit(
                "rank", self.ranking_attack["name"], m, attack_kwargs(self.ranking_attack), label(self.ranking_attack)
            )
            broke = self._run_unit(unit, x, y, on, eps)
            for i in torch.nonzero(broke).flatten().tolist():
                self.ranking_breaks[i] = self.ranking_breaks[i] or f"rank:{unit.tag}"
            broke_by.append(float(broke.sum()))
            self._step(bar, out, f"ranking at eps={eps:g}: {unit.tag}")
        totals = self._sum(broke_by, x.device)
        order = sorted(range(len(self.members)), key=lambda k: -totals[k])
        return [self.members[k] for k in order], {
            "eps": f"{eps:.6g}",
            "attack": label(self.ranking_attack),
            "broken": {m["name"]: int(t) for m, t in zip(self.members, totals)},
        }

    def _sum(self, values: list, device: torch.device) -> list[float]:
        """Counts summed over DDP ranks. The tensor is made on the data's device: NCCL takes accelerator tensors
        only."""
        return self.reduce(torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)).tolist()

    def _step(self, bar, out, desc: str) -> None:
        out["units_done"] += 1
        if bar is not None:
            bar.set_description(desc, refresh=False)
            bar.update(1)

    @staticmethod
    def _breakers(clean: torch.Tensor, worst_alive: torch.Tensor, out: dict) -> list[Optional[str]]:
        """Per sample, who broke it before this epsilon's attacks: ``clean`` (misclassified), the breaker at the
        previous epsilon (marked ``@eps=E``: the same adversarial example is valid here), or None."""
        breaker: list[Optional[str]] = ["clean" if not c else None for c in clean.tolist()]
        if out["eps"]:
            prev_eps, prev = list(out["eps"].items())[-1]
            for i in torch.nonzero(clean & ~worst_alive).flatten().tolist():
                b = prev["per_sample"]["worst"][i]
                breaker[i] = b if "@eps=" in b else f"{b}@eps={prev_eps}"
        return breaker

    def _paper_protocol(self, x, y, eps, clean, bar, out) -> tuple[dict[str, list[Optional[str]]], torch.Tensor]:
        """The paper's attacks, each through every path: per attack, the path that broke each sample; and the
        samples every attack left."""
        paper: dict[str, list[Optional[str]]] = {}
        paper_alive_all = clean.clone()
        for unit in self.plan.paper_units():
            rec = paper.setdefault(unit.label, [None if c else "clean" for c in clean.tolist()])
            alive = torch.tensor([r is None for r in rec], dtype=torch.bool, device=x.device)  # early exit
            broke = self._run_unit(unit, x, y, alive, eps)
            for i in torch.nonzero(broke).flatten().tolist():
                rec[i] = unit.member["name"]
            paper_alive_all &= ~broke
            self._step(bar, out, f"eps={eps:g} paper {unit.tag}")
        return paper, paper_alive_all

    def _run_eps(self, x, y, eps, clean, worst_alive, bar, out):
        st = SimpleNamespace(breaker=self._breakers(clean, worst_alive, out), phases={}, alive=None)
        paper, paper_alive_all = self._paper_protocol(x, y, eps, clean, bar, out)
        counts = dict(
            zip(paper, map(int, self._sum([sum(r is None for r in rec) for rec in paper.values()], x.device)))
        )
        st.alive = worst_alive & paper_alive_all
        for i in range(len(y)):
            if st.breaker[i] is None and not st.alive[i]:
                st.breaker[i] = "paper:" + next(f"{lab}/{rec[i]}" for lab, rec in paper.items() if rec[i] is not None)
        if (
            self._ranks() and eps == self.epsilons[-1]
        ):  # the ranking's examples were made at this epsilon: they count too
            kept = st.alive & torch.tensor(
                [b is not None for b in self.ranking_breaks], dtype=torch.bool, device=x.device
            )
            for i in torch.nonzero(kept).flatten().tolist():
                st.breaker[i] = self.ranking_breaks[i]
            st.phases["rank"], st.alive = int(kept.sum()), st.alive & ~kept
        tier, rounds, after, tol = self._tier_and_checks(st, x, y, eps, bar, out)
        g = self._sum([float(st.alive.sum()), float(paper_alive_all.sum())] + list(st.phases.values()), x.device)
        res = {
            "robust_worst": int(g[0]),
            "robust_paper_all": int(g[1]),
            "robust_paper": counts,
            "broken_by_phase": dict(zip(st.phases, (int(v) for v in g[2:]))),
            "check_rounds": rounds,
            "confidence": confidence(tier, rounds, tol, after),
            "top_k": [m["name"] for m in self.ranked[: self.adaptive.top_k]] if self.adaptive else [],
            "per_sample": {"worst": st.breaker, "paper": paper},
        }
        return res, st.alive

    def _tier_and_checks(self, st, x, y, eps, bar, out) -> tuple[int, list[int], list[int], float]:
        """The adaptive tier (and the transfer attack), then check rounds on the survivors until converged (at most
        ``check_rounds``; ``srsnn.robustness.audit.confidence``), then ``verify_rounds`` more. Returns what the tier,
        each round and each round past the stop broke (all ranks), and the tolerance in samples."""
        ranked = self.ranked
        units = self.plan.adaptive_units(ranked)
        if self.transfer:
            units.append(Unit("transfer", "pgd", MODEL, dict(steps=10), f"transfer:{self.transfer[0]}"))
        st.phases.update({u.phase: 0 for u in units})  # the same on every rank
        self.gap = torch.full((len(y),), float("inf"), device=x.device)  # closest gap per sample at this epsilon
        made = self._sum(self._run_units(st, units, x, y, eps, bar, out) + [st.phases.get("rank", 0)], x.device)
        tier = int(sum(made))  # summed: every rank agrees
        tally: dict[tuple, float] = {}  # what each (attack, path) broke so far at this epsilon (all ranks)
        self._tally(tally, units, made)
        rounds: list[int] = []
        after: list[int] = []
        b = self.adaptive
        cap = b.check_rounds if b else 0
        verify = b.verify_rounds if cap else 0  # rounds past a stop: none without rounds
        tol = b.tolerance * self._sum([float(len(y))], x.device)[0] if b else 0.0
        ticks = out["units_done"] + (cap + verify) * len(self.plan.check_units(ranked, 0, self.plan.pairs(ranked)))
        settled = lambda: len(rounds) == cap or confidence(tier, rounds, tol)["converged"]
        for r in range(cap + verify):
            if len(after) == verify and settled():
                break
            workhorse = max(tally, key=tally.get) if tally else None  # the pair that broke the most so far
            check = self.plan.check_units(ranked, r, frozenset(tally), workhorse)
            st.phases.setdefault("check", 0)
            first = workhorse if r == 0 else None
            masks = self._within_reach(st, check, first) if b.allocation == "margin" else None
            made = self._sum(self._run_units(st, check, x, y, eps, bar, out, f"{r + 1}", masks), x.device)
            self._tally(tally, check, made)
            (after if settled() else rounds).append(int(sum(made)))
        for _ in range(out["units_done"], ticks):  # the bar's total counts every round in full
            self._step(bar, out, f"eps={eps:g} done")
        return tier, rounds, after, tol

    @staticmethod
    def _tally(tally: dict, units: list[Unit], made: list[float]) -> None:
        for u, c in zip(units, made):
            if c > 0:
                tally[(u.attack, u.member["name"])] = tally.get((u.attack, u.member["name"]), 0) + c

    def _within_reach(self, st, units: list[Unit], workhorse: Optional[tuple]) -> list[torch.Tensor]:
        """The survivors each unit of a margin-allocated round runs on, fixed at the round's start: those within reach
        (closest gap below ``reach`` x their clean gap); the ``workhorse`` (in the first round: the (attack, path)
        that broke the most in the tier, summed over ranks; ties in the tier's order) on those within twice the reach;
        Square also on the survivors the gradient attacks could not move (closest gap above ``STUCK`` x the clean
        gap: masked gradients look like this, and a gradient-free search is what breaks them)."""
        reach = st.alive & (self.gap < self.adaptive.reach * self.clean_gap)
        wide = st.alive & (self.gap < 2 * self.adaptive.reach * self.clean_gap)
        stuck = st.alive & (self.gap > STUCK * self.clean_gap)
        return [
            wide if (u.attack, u.member["name"]) == workhorse else reach | stuck if u.attack == "square" else reach
            for u in units
        ]

    def _run_units(self, st, units, x, y, eps, bar, out, round_suffix: str = "", masks=None) -> list[int]:
        """Each unit on the survivors ``st.alive`` (and its mask); records who broke each sample; what each unit broke
        (this rank)."""
        broken = []
        for k, unit in enumerate(units):
            on = st.alive if masks is None else st.alive & masks[k]
            broke = self._run_unit(unit, x, y, on, eps, round_suffix)
            for i in torch.nonzero(broke).flatten().tolist():
                st.breaker[i] = f"{unit.phase}{round_suffix}:{unit.tag}"
            st.alive &= ~broke
            st.phases[unit.phase] = st.phases.get(unit.phase, 0) + int(broke.sum())  # same order on every rank
            broken.append(int(broke.sum()))
            self._step(bar, out, f"eps={eps:g} {unit.phase}{round_suffix} {unit.tag}")
        return broken

    @torch.no_grad()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The deployed model's logits on the unperturbed images, in batches."""
        return torch.cat([self.model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def clean_correct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per sample: the deployed model classifies the unperturbed image correctly."""
        return self._logits(x).argmax(1) == y if len(x) else torch.zeros(0, dtype=torch.bool, device=y.device)

    # -- audit probes ------------------------------------------------------------------------------------------
    def zero_gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
        """Gradient masking probe: per sample, is the CE input gradient all-zero under *every* member (bool mask), and
        per member, on how many samples (this rank) is it all-zero. A member with no gradient on most samples is dead
        weight in the ensemble: it hides nothing, and breaks nothing."""
        zero_all = torch.ones(len(x), dtype=torch.bool, device=x.device)
        per_member: dict[str, int] = {}
        for member in self.members:
            zero = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            for i in range(0, len(x), self.batch_size):
                xi = x[i : i + self.batch_size].clone().requires_grad_(True)
                with use_path(self.model, member), torch.enable_grad():
                    loss = torch.nn.functional.cross_entropy(
                        self.model(xi), y[i : i + self.batch_size], reduction="sum"
                    )
                    (g,) = torch.autograd.grad(loss, xi)
                zero[i : i + len(xi)] = g.flatten(1).abs().sum(1) == 0
            zero_all &= zero
            per_member[member["name"]] = int(zero.sum())
        return zero_all, per_member

    def robust_count(self, x: torch.Tensor, y: torch.Tensor, eps: float, attack: dict) -> int:
        """Samples robust to ``attack`` through every member (early exit), summed over ranks."""
        alive = self.clean_correct(x, y)
        for m in self.members:
            alive &= ~self._run_unit(Unit("audit", attack["name"], m, attack_kwargs(attack)), x, y, alive, eps)
        return int(self._sum([float(alive.sum())], x.device)[0])
