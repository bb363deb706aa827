"""``AttackEvaluation``: the Lightning wrapper of ``srsnn.robustness.runner`` (robust accuracy through the spikes).

Runs at the end of ``trainer.test`` on the first ``num_samples`` samples of the datamodule's
``test_dataloader()``; each DDP rank attacks its own exact shard and the counts are summed. What runs, per
epsilon: the paper's protocol (for an SNN, every attack through the 19 gradient paths of
``srsnn.robustness.paths.paper_ensemble``), then the adaptive tier (APGD-CE, targeted APGD-DLR through the strongest
paths, Square, optional transfer, convergence rounds with 2x steps) on the survivors; the headline is the
per-sample worst case. Results go to ``<log_dir>/evaluation/`` (see ``AttackEvaluation``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from typing import Any, Literal, Mapping, Optional, Sequence, Union, get_args

import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from tqdm import tqdm

from srsnn.errors import UserError
from srsnn.export.card import build_card, image_digests
from srsnn.modes import frozen_parameters, module_mode
from srsnn.robustness.attacks import Eps, parse_eps
from srsnn.robustness.audit import audit, confidence_statement, dead_paths, summarize, verdict
from srsnn.robustness.budget import AdaptiveBudget, Preset
from srsnn.robustness.cost import PassCounter
from srsnn.robustness.paths import ensemble, padded, path_modes, snn_attack_paths
from srsnn.robustness.planner import label
from srsnn.robustness.reporting import attacks_markdown, plot_robust_accuracy
from srsnn.robustness.results import EXAMPLES_FILE, Budget, Evaluation, Examples, MembersAlone, PerSample, SampleRecord
from srsnn.robustness.runner import Evaluator
from srsnn.robustness.tuning import GRIDS, tune_snn_paths

from .interrupt import sigterm_as_interrupt
from .shards import gather_objects, sum_over_ranks, test_subset, write_results

WHITE_BOX = ("fgsm", "pgd", "apgd_ce", "apgd_dlr")
PAPER_ATTACKS = ({"name": "fgsm"}, {"name": "pgd", "steps": 10})  # the paper's main-table protocol


DEFAULT_ADAPTIVE = dataclasses.asdict(AdaptiveBudget())
# named budgets for ``adaptive`` (docs/evaluation.md): ``thorough`` (the default), ``strong`` (the margin allocation,
# the digits demo's), ``fast`` and ``quick`` (upper bounds, and the audit says so); ``paper`` = the protocol alone
PRESETS = {
    "thorough": {},  # the default (``adaptive: true``): every round on every survivor
    # about a quarter of thorough's passes, rounds allocated by margin: the digits demo's budget (docs/benchmarks.md
    # says what it misses); SA-PGD gets 10 short starts in the first round because its breaks are lucky starts
    "strong": dict(
        other_targets=1,
        ce_restarts=1,
        snn_restarts=1,
        check_rounds=6,
        allocation="margin",
        rank_samples=30,
        tune_samples=20,
        snn_first_round_starts=10,
    ),
    # large models: at most ~3x the paper protocol's passes, no rounds (its numbers are upper bounds)
    "fast": dict(
        top_k=1,
        max_targets=1,
        other_targets=1,
        ce_restarts=1,
        snn_steps=50,
        snn_restarts=1,
        square_queries=0,
        check_rounds=0,
        rank_samples=50,
        tune_samples=20,
    ),
    "quick": dict(
        top_k=1,
        steps=5,
        max_targets=2,
        other_targets=1,
        square_queries=50,
        check_rounds=1,
        snn_steps=20,
        snn_restarts=1,
        ce_restarts=1,
    ),
}


class AttackEvaluation(Callback):
    """Robust accuracy at the end of ``trainer.test``: the paper's protocol, an adaptive tier beyond it and the
    per-sample worst case over everything run (``srsnn.robustness``), with an audit.

    Args:
        attacks: the paper protocol's white-box attacks (default its main table: FGSM and PGD-10); for an
            SNN each runs through every gradient path (a sample is robust only if every path fails).
        epsilons: perturbation budgets in pixel space (numbers or ``"8/255"``).
        num_samples: the first ``num_samples`` of ``test_dataloader()`` (0 = all); batch_size: attack batch size.
        ensemble: ``auto`` (SNN: the paper's 19 gradient paths; ANN: the network), ``none`` or ``paper``.
        adaptive: the tier beyond the paper: a preset (``thorough`` = ``true``, the default; ``strong``, ``fast``,
            ``quick``; ``paper`` = ``false``, the paper's protocol only) or the thorough budget with some keys changed
            (``srsnn.robustness.budget.AdaptiveBudget``: top_k, steps, restarts, ce_restarts, max_targets,
            other_targets, square_queries, check_rounds, allocation, ...), e.g. ``{square_queries: 5000}``, or a
            preset with some keys changed, ``{preset: strong, verify_rounds: 3}``.
        transfer_from: ``{config: <yaml>, ckpt_path: <ckpt>}`` of a source model; its PGD examples count too.
        audit: run the audit; large_eps: epsilon of the "near 0 accuracy" check; margin_points: how far (in
            points) the paper's protocol may sit above the worst case before the audit flags it.
        output_dir: where results go (default ``<log_dir>/evaluation``).

    Writes ``attacks.json`` (summary, budget, audit), ``per_sample.json`` (which attack and member broke each
    sample at each epsilon), ``attacks.md`` and ``robust_accuracy.png``; logs ``test/robust_worst/eps=E`` and
    ``test/robust_paper_<attack>/eps=E``. Ctrl-C / SIGTERM stop it within seconds, writing the finished epsilons.
    """

    def __init__(
        self,
        attacks: Sequence[Mapping[str, Any]] = PAPER_ATTACKS,
        epsilons: Optional[list[Eps]] = None,
        num_samples: NonNegativeInt = 500,
        batch_size: PositiveInt = 100,
        ensemble: Literal["auto", "none", "paper"] = "auto",
        adaptive: Union[bool, Preset, dict[str, Any]] = True,
        transfer_from: Optional[dict[str, str]] = None,
        audit: bool = True,
        large_eps: float = 0.5,
        margin_points: NonNegativeFloat = 2.0,
        output_dir: Optional[str] = None,
    ):
        self.attacks = [dict(a) for a in attacks]
        for a in self.attacks:
            if a.get("name") not in WHITE_BOX:
                raise UserError(
                    f"AttackEvaluation: attack {a.get('name')!r} is not a white-box attack of {WHITE_BOX}"
                    " (Square and APGD-T belong to `adaptive`, transfer to `transfer_from`)"
                )
        self.epsilons = sorted(
            parse_eps(e, "AttackEvaluation.epsilons") for e in (epsilons or ["2/255", "4/255", "8/255"])
        )
        self.preset = (
            adaptive
            if isinstance(adaptive, str)
            else "custom"
            if isinstance(adaptive, dict)
            else "thorough"
            if adaptive
            else "paper"
        )
        if isinstance(adaptive, dict) and "preset" in adaptive:  # a preset with some keys changed
            base = adaptive["preset"]
            if base not in PRESETS:
                raise UserError(f"AttackEvaluation.adaptive.preset: {base!r} is not one of {sorted(PRESETS)}")
            self.preset, adaptive = (
                f"{base}+",
                {**PRESETS[base], **{k: v for k, v in adaptive.items() if k != "preset"}},
            )
        if isinstance(adaptive, str):
            if adaptive not in get_args(Preset):
                raise UserError(
                    f"AttackEvaluation.adaptive: unknown preset {adaptive!r}; one of "
                    f"{list(get_args(Preset))} or a dict of {sorted(DEFAULT_ADAPTIVE)}"
                )
            adaptive = False if adaptive == "paper" else PRESETS[adaptive]
        if adaptive is True:
            adaptive = {}
        try:
            self.adaptive = AdaptiveBudget(**{**DEFAULT_ADAPTIVE, **adaptive}) if adaptive is not False else None
        except TypeError as err:
            raise UserError(f"AttackEvaluation.adaptive: {err}; its keys are {sorted(DEFAULT_ADAPTIVE)}") from None
        self.num_samples, self.batch_size, self.ensemble = num_samples, batch_size, ensemble
        self.transfer_from, self.audit, self.margin_points = transfer_from, audit, margin_points
        self.large_eps, self.output_dir = parse_eps(large_eps, "AttackEvaluation.large_eps"), output_dir
        self.results: Optional[Evaluation] = None
        self.per_sample: Optional[PerSample] = None
        self._stop: Optional[threading.Event] = None  # set per evaluation under DDP (signals are deferred)

    def members(self, pl_module) -> Optional[list[dict]]:
        if self.ensemble == "none" or (self.ensemble == "auto" and getattr(pl_module, "kind", "ann") != "snn"):
            return None
        return ensemble(pl_module.model)

    def on_test_epoch_end(self, trainer, pl_module):
        model = pl_module.model
        # several ranks: a signal only sets a flag, and the ranks stop together at the next attack run's end
        self._stop = threading.Event() if trainer.world_size > 1 else None
        with module_mode(model), sigterm_as_interrupt(self._stop):
            self.results, self.per_sample = self.evaluate(trainer, pl_module, model)
        self.write(trainer)
        for eps, v in self.results.eps.items():
            pl_module.log(f"test/robust_worst/eps={eps}", v.worst, sync_dist=False)
            for name, acc in v.paper.items():
                pl_module.log(f"test/robust_paper_{name}/eps={eps}", acc, sync_dist=False)
            if v.confidence:  # what another round would likely still break (0 when converged)
                pl_module.log(f"test/next_round_bound/eps={eps}", float(v.confidence["bound"]), sync_dist=False)
        if self.results.interrupted:
            rank_zero_info(f"[AttackEvaluation] {self.results.interrupted}; the finished part is written above")
            raise KeyboardInterrupt

    def evaluate(self, trainer, pl_module, model) -> tuple[Evaluation, PerSample]:
        t0 = time.time()
        device = pl_module.device
        x, y, idx = test_subset(trainer, self.num_samples)
        x, y = x.to(device), y.to(device)
        num_classes = getattr(trainer.datamodule, "num_classes", None)
        if not num_classes:
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[1])
        members, modes = self.members(pl_module), path_modes(model)
        reduce = sum_over_ranks  # counts are made on the data's device (NCCL takes accelerator tensors only)
        model = padded(model)  # the rows the evaluation asks for are counted, not the padding
        counter = PassCounter(model)
        with counter, counter.phase("tuning"):
            tuned = members and modes and self.adaptive and self.adaptive.snn_restarts
            tuning = self._tune(trainer, model, device, modes) if tuned else None
        ev = self._evaluator(trainer, model, members, num_classes, tuning, modes, device, counter)
        total = int(reduce(torch.tensor(float(len(y)), device=device)).item())
        names = [m["name"] for m in ev.members]
        self._announce(ev, total, bool(members))
        with frozen_parameters(model, ev.transfer[1] if ev.transfer else None), counter:  # attacks need dL/dx only
            local = ev.run(x, y, idx)  # idx: global indices, the keys of each sample's random starts
            clean = int(reduce(torch.tensor(float(sum(local["clean"])), device=device)).item())
            per_eps = summarize(local, max(total, 1), clean)
            with counter.phase("audit"):
                audited = self._audit(ev, x, y, per_eps, total, num_classes, local) if self.audit else ([], {})
        checks, zero_by_path = audited
        passes = counter.per_sample(total, reduce, device)
        res = Evaluation(
            kind=getattr(pl_module, "kind", "ann"),
            num_samples=total,
            clean_acc=clean / max(total, 1),
            num_classes=num_classes,
            epsilons=[float(e) for e in per_eps],
            ensemble=names,
            budget=self._budget(ev, bool(members), num_classes, tuning, modes),
            tuning=tuning,
            eps=per_eps,
            audit=checks,
            confidence=[
                confidence_statement(e, v.worst, v.confidence if self.adaptive else None, total)
                for e, v in per_eps.items()
            ],
            interrupted=local["interrupted"],
            zero_gradient_samples_by_path=zero_by_path,
            notes=dead_paths(zero_by_path, total),
            members_alone=self._members_alone(ev, local["ranking"], clean, total),
            seconds=time.time() - t0,
            seconds_by_phase={k: round(v, 1) for k, v in ev.seconds.items()},
            passes_by_phase={k: {d: round(v, 1) for d, v in c.items()} for k, c in passes.items()},
        )
        _log_summary(res)
        # what the card needs from every rank, gathered here: every rank calls (a collective)
        self._card_inputs = (
            _gathered_examples(ev.examples),
            _gathered_digests(idx, x),
            str(device),
            trainer.world_size,
        )
        return res, _per_sample_records(idx, local)

    def _announce(self, ev: Evaluator, total: int, ensemble: bool) -> None:
        what = f"ensemble of {len(ev.members)} gradient paths" if ensemble else "the network itself"
        at_most, paper = ev.planned_passes()
        rank_zero_info(
            f"[AttackEvaluation] {total} test samples, {len(self.epsilons)} epsilon(s), {what}; "
            f"{ev.plan.units_per_eps() * len(self.epsilons)} attack runs, each on the samples nothing broke yet; "
            f"preset {self.preset}: at most {at_most:,} passes per sample if nothing broke (the paper protocol: at "
            f"most {paper:,})"
        )

    def _evaluator(self, trainer, model, members, num_classes: int, tuning, modes, device, counter) -> Evaluator:
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        progress = (
            (lambda total: tqdm(total=total, desc="robustness", file=sys.stderr, dynamic_ncols=True, smoothing=0.1))
            if show
            else None
        )
        return Evaluator(
            model,
            members,
            self.epsilons,
            self.attacks,
            num_classes,
            self.adaptive,
            transfer=self._transfer_source(device),
            reduce=sum_over_ranks,
            progress=progress,
            batch_size=self.batch_size,
            stop=self._stop.is_set if self._stop else None,
            snn_paths=snn_attack_paths(tuning["assg"], tuning["hart"], modes) if tuning else None,
            counter=counter,
            announce=lambda line: rank_zero_info(f"[AttackEvaluation] {line}"),
        )

    def _budget(self, ev: Evaluator, ensemble: bool, num_classes: int, tuning, modes) -> Budget:
        """What ran, in words (``attacks.md``'s budget lines)."""
        n = len(ev.members)
        snn_paths = None
        if tuning:
            snn_paths = (
                f"SA-PGD ({self.adaptive.snn_steps} steps, {self.adaptive.snn_restarts} start(s)) through "
                + " and ".join(m["name"] for m in ev.snn_paths)
                + f" ({' and '.join(GRIDS[m][0] for m in modes if m in GRIDS)}: {tuning['how']})"
            )
        return Budget(
            paper=", ".join(label(a) for a in self.attacks)
            + (f" through {n} gradient paths (ensemble)" if ensemble else " on the network"),
            ranking_attack=label(ev.ranking_attack),
            adaptive=self.adaptive.describe(n, num_classes) if self.adaptive else None,
            transfer=f"PGD-10 from {self.transfer_from['ckpt_path']}" if self.transfer_from else None,
            snn_paths=snn_paths,
        )

    def _members_alone(self, ev: Evaluator, ranking: dict, clean: int, total: int) -> Optional[MembersAlone]:
        """Each gradient path's own robust accuracy under the ranking attack (None without a ranking)."""
        if not ranking:
            return None
        return MembersAlone(
            eps=ranking["eps"],
            attack=ranking["attack"],
            accuracy={k: (clean - v) / max(total, 1) for k, v in ranking["broken"].items()},
            top_k=[m["name"] for m in ev.ranked[: self.adaptive.top_k]],
        )

    def _tune(self, trainer, model, device, modes) -> dict:
        """ASSG's A and HART's gamma chosen on the first validation images (``tune_snn_paths``; as many as the test
        subset, at most the budget's ``tune_samples``);
        without a fixed validation split, the published defaults."""
        eps = self.epsilons[0]
        try:
            n = self.adaptive.tune_samples
            n = min(n, self.num_samples) if self.num_samples else n
            xv, yv, iv = test_subset(trainer, n, split="val")
        except UserError as err:
            return {**{m: GRIDS[m][2] for m in GRIDS}, "how": f"the published defaults ({err})"}
        steps = min(50, self.adaptive.snn_steps)
        with frozen_parameters(model):  # attacks need dL/dx only
            out = tune_snn_paths(
                model, xv.to(device), yv.to(device), eps, sum_over_ranks, steps, self.batch_size, iv, modes
            )
        n = int(sum_over_ranks(torch.tensor(float(len(yv)), device=device)).item())
        out["how"] = f"the most broken of {n} validation images by SA-PGD-{steps} at eps={eps:g}"
        return out

    def _transfer_source(self, device) -> Optional[tuple[str, torch.nn.Module]]:
        """(name, model) of ``transfer_from``'s source model, on ``device``; None without one."""
        if not self.transfer_from:
            return None
        from lightning_modules.loading import load_trained

        src, _, _ = load_trained(self.transfer_from["config"], self.transfer_from["ckpt_path"])
        return os.path.basename(self.transfer_from["ckpt_path"]), src.model.to(device).eval()

    def _audit(
        self, ev: Evaluator, x, y, per_eps: dict, total: int, num_classes: int, local: dict
    ) -> tuple[list, dict]:
        """The audit's checks and the zero-gradient samples per path (counted over every rank)."""
        if local["interrupted"]:
            return [], {}
        try:
            zero_all, zero_local = ev.zero_gradients(x, y)
            counts = sum_over_ranks(
                torch.tensor(
                    [float(zero_all.sum())] + [float(v) for v in zero_local.values()],
                    dtype=torch.float64,
                    device=x.device,
                )
            ).tolist()
            big = (self.large_eps, ev.robust_count(x, y, self.large_eps, {"name": "pgd", "steps": 20}) / max(total, 1))
            checks = audit(per_eps, total, int(counts[0]), big, num_classes, self.margin_points)
            return checks, dict(zip(zero_local, map(int, counts[1:])))
        except KeyboardInterrupt:
            local["interrupted"] = "interrupted during the audit (every epsilon finished)"
            return [], {}

    def write(self, trainer) -> None:
        # on every rank: trainer.log_dir is a broadcast under DDP (asked on rank 0 alone, it waits forever)
        self._config_path = os.path.join(trainer.log_dir or trainer.default_root_dir, "config.yaml")
        write_results(
            trainer,
            self.output_dir,
            "attacks",
            self.results,
            attacks_markdown(self.results),
            {
                "robust_accuracy.png": lambda p: plot_robust_accuracy({"this model": self.results}, p),
                "per_sample.json": self.per_sample.write,
                EXAMPLES_FILE: lambda p: self._write_card(trainer, p),
            },
        )

    def _write_card(self, trainer, examples_path: str) -> None:
        """``adversarial.safetensors.gz`` (the examples of every break) and ``card.json`` beside it (rank 0)."""
        examples, digests, device, processes = self._card_inputs
        size = examples.write(examples_path)
        model = trainer.lightning_module.model
        card = build_card(self.results, self.per_sample, model, trainer.datamodule, digests, self.preset)
        card.evaluation.update(device=device, processes=processes)
        n = len(examples.found)
        card.examples.update(count=n, bytes=size, bytes_per_1000_broken=round(1000 * size / n) if n else None)
        config = os.path.relpath(self._config_path, os.path.dirname(examples_path))
        card.run = {"config": config, "ckpt_path": trainer.ckpt_path}
        card.write(os.path.join(os.path.dirname(examples_path), "card.json"))


def _gathered_examples(examples: Examples) -> Examples:
    """Every rank's examples in one (the same on every rank: a collective)."""
    merged = Examples()
    for found in gather_objects(examples.found):
        merged.found.update(found)
    return merged


def _gathered_digests(idx: list, x: torch.Tensor) -> list[str]:
    """Every test image's SHA-256, in the test subset's order (a collective)."""
    by_index = {}
    for shard_idx, digests in gather_objects((list(idx), image_digests(x))):
        by_index.update(zip(shard_idx, digests))
    return [by_index[i] for i in sorted(by_index)]


def _log_summary(res: Evaluation) -> None:
    for c in res.audit:
        v = verdict(c)
        rank_zero_info(f"[audit] {v + '  <<< in doubt' if v == 'FAIL' else v}: {c.check} — {c.detail}")
    for note in res.notes:
        rank_zero_info(f"[audit] NOTE: {note}")
    for eps, v in res.eps.items():
        rank_zero_info(
            f"[AttackEvaluation] eps={eps}: worst case {v.worst:.4f}, paper protocol {v.paper_all:.4f}"
            f" (overestimate {v.overestimate_points:.1f} points)"
        )
    for line in res.confidence:
        rank_zero_info(f"[confidence] {line}")


def _per_sample_records(idx: list, local: dict) -> PerSample:
    """``per_sample.json``: every rank's records, in the global order of the test subset."""
    merged: dict[int, SampleRecord] = {}
    for shard_idx, shard in gather_objects((idx, local)):
        for k, i in enumerate(shard_idx):
            merged[i] = SampleRecord(
                index=i,
                clean_correct=shard["clean"][k],
                broken_by={e: r["per_sample"]["worst"][k] for e, r in shard["eps"].items()},
                paper={e: {a: rec[k] for a, rec in r["per_sample"]["paper"].items()} for e, r in shard["eps"].items()},
            )
    return PerSample(samples=[merged[i] for i in sorted(merged)])
