"""A pipeline file -> its stages: the dense chain, the pruning sweep, the T sweep, your own SNNs, the converted-only
evaluations, once per seed (``srsnn_cli.pipeline`` runs them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Optional

import yaml

from srsnn.errors import PipelineError


@dataclass
class Stage:
    name: str
    command: str  # fit | test
    config: str | list[str]  # a config file, or several composed in order (a dataset's ANN config + conf/prune/<group>)
    args: list[str] = field(default_factory=list)
    needs: dict[str, str] = field(default_factory=dict)  # option -> stage whose checkpoint it takes
    kind: str = "ann"
    # what report.py reads from <stage>/stage.json: pruning method (None = dense) and sparsity, T (None = the
    # config's), evaluated right after conversion (no fine-tuning)
    meta: dict = field(default_factory=dict)

    @property
    def configs(self) -> list[str]:
        return [self.config] if isinstance(self.config, str) else list(self.config)

    def config_args(self) -> list[str]:
        """``--config <file>`` for each of its config files, in order (a later file overrides an earlier one)."""
        return [arg for f in self.configs for arg in ("--config", f)]


DENSE = {"method": None, "sparsity": 0.0, "T": None, "converted_only": False}


def plan(cfg: dict) -> list[Stage]:
    """Expand a pipeline config into its stages: the dense chain, the pruning sweep (every method x sparsity) and
    the time-step sweep (``t_sweep: {of: <run>, num_steps: [..]}``: that run's ANN converted and fine-tuned at
    each T), your own snnTorch SNNs (``native: [{name, config, args, fine_tune}]``: evaluated, and with
    ``fine_tune: true`` also fine-tuned and evaluated again) and the converted-only SNNs' evaluation
    (``converted_test: [<run>, ..]``: no fine-tuning)."""
    for key in ("run_dir", "ann", "snn"):
        if key not in cfg:
            raise PipelineError(f"pipeline config needs '{key}'")
    p = _Planner(cfg)
    p.dense()
    p.pruning()
    p.t_sweep()
    p.native()
    p.converted()
    return over_seeds(p.stages, cfg.get("seeds"))


class _Planner:
    """The stages of one pipeline config, group by group (``plan``)."""

    def __init__(self, cfg: dict):
        self.cfg, self.extra = cfg, cfg.get("args", {}) or {}
        self.metas = {"ann": DENSE}  # per ANN stage: what report.py reads from its stage.json
        self.stages: list[Stage] = []

    def a(self, kind: str) -> list[str]:
        """The pipeline's extra arguments for one kind of stage (``args: {snn_test: [...]}``)."""
        return [str(x) for x in self.extra.get(kind, [])]

    def snn_chain(self, tag: str, ann: str, more: list[str] = (), T: Optional[int] = None) -> list[Stage]:
        """Conversion + fine-tuning (``fit``), then evaluation (``test``) of one ANN stage."""
        meta, snn = {**self.metas[ann], "T": T}, self.cfg["snn"]
        fit = {"--model.init_args.ann_checkpoint": ann}
        return [
            Stage(f"{tag}snn", "fit", snn, self.a("snn") + list(more), fit, "snn", meta),
            Stage(
                f"{tag}snn_test",
                "test",
                snn,
                self.a("snn_test") + list(more),
                {"--ckpt_path": f"{tag}snn"},
                "snn",
                meta,
            ),
        ]

    def dense(self) -> None:
        ann = self.cfg["ann"]
        self.stages += [
            Stage("ann", "fit", ann, self.a("ann"), meta=DENSE),
            Stage("ann_test", "test", ann, self.a("ann_test"), {"--ckpt_path": "ann"}, meta=DENSE),
            *self.snn_chain("", "ann"),
        ]

    def pruning(self) -> None:
        for entry in self.cfg.get("pruning", []) or []:
            for s in entry.get("sparsity", []):
                tag = f"{entry['name']}{round(100 * float(s))}"
                self.metas[f"{tag}_ann"] = meta = {**DENSE, "method": entry["name"], "sparsity": float(s)}
                sparsity = ["--trainer.callbacks.init_args.sparsity", str(s)]
                self.stages += [
                    Stage(
                        f"{tag}_ann",
                        "fit",
                        entry["config"],
                        self.a("prune") + sparsity,
                        {"--model.init_args.init_from": "ann"},
                        meta=meta,
                    ),
                    Stage(
                        f"{tag}_ann_test",
                        "test",
                        self.cfg["ann"],
                        self.a("ann_test"),
                        {"--ckpt_path": f"{tag}_ann"},
                        meta=meta,
                    ),
                    *self.snn_chain(f"{tag}_", f"{tag}_ann"),
                ]

    def ann_of(self, key: str, of: str) -> str:
        """The ANN stage of a run named in ``key`` (``dense`` or ``<method><percent>``, e.g. ``hydra90``)."""
        if of == "dense":
            return "ann"
        if not any(st.name == f"{of}_ann" for st in self.stages):
            raise PipelineError(
                f"{key}: {of!r} is not a run of this pipeline; name one of "
                f"{['dense'] + [st.name[:-4] for st in self.stages if st.name.endswith('_ann')]}"
            )
        return f"{of}_ann"

    def t_sweep(self) -> None:
        sweep = self.cfg.get("t_sweep") or {}
        ann = self.ann_of("t_sweep.of", sweep.get("of", "")) if sweep.get("num_steps") else None
        for t in sweep.get("num_steps", []):
            self.stages += self.snn_chain(
                f"{ann[:-3]}T{int(t)}_", ann, ["--model.init_args.num_steps", str(int(t))], int(t)
            )

    def native(self) -> None:
        """Your own snnTorch SNNs (``lightning_modules.NativeSNN``), beside the rest; the pipeline's args for
        ``native_test`` / ``native`` (not ``snn_test`` / ``snn``: those may name the converted SNN's options)."""
        for entry in self.cfg.get("native", []) or []:
            if not (isinstance(entry, dict) and {"name", "config"} <= set(entry)):
                raise PipelineError(
                    f"native: {entry!r} needs a name and a config (and args, fine_tune: true to fine-tune)"
                )
            more, meta, tag, config = (
                [str(x) for x in entry.get("args", [])],
                {**DENSE, "method": "native"},
                entry["name"],
                entry["config"],
            )
            self.stages.append(
                Stage(f"{tag}_snn_test", "test", config, self.a("native_test") + more, kind="snn", meta=meta)
            )
            if entry.get("fine_tune"):
                self.stages += [
                    Stage(f"{tag}_tuned_snn", "fit", config, self.a("native") + more, kind="snn", meta=meta),
                    Stage(
                        f"{tag}_tuned_snn_test",
                        "test",
                        config,
                        self.a("native_test") + more,
                        {"--ckpt_path": f"{tag}_tuned_snn"},
                        "snn",
                        meta,
                    ),
                ]

    def converted(self) -> None:
        """Conversion alone, evaluated like the fine-tuned SNNs."""
        for of in self.cfg.get("converted_test", []) or []:
            ann = self.ann_of("converted_test", of)
            meta = {**self.metas[ann], "converted_only": True}
            fit = {"--model.init_args.ann_checkpoint": ann}
            self.stages.append(
                Stage(f"{ann[:-3]}snn_converted_test", "test", self.cfg["snn"], self.a("snn_test"), fit, "snn", meta)
            )


def over_seeds(stages: list[Stage], seeds) -> list[Stage]:
    """``seeds: [0, 1, 2]``: every stage once per seed, seed by seed, in ``seed<k>/<stage>`` with
    ``--seed_everything k`` (so the seed is part of each stage's identity: a completed seed is skipped on a re-run)
    and taking checkpoints from its own seed's stages; without ``seeds``, the configs' own ``seed_everything``."""
    if seeds is None:
        return stages
    if not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise PipelineError(f"seeds: {seeds!r} is not a list of distinct non-negative integers, e.g. seeds: [0, 1, 2]")
    return [
        replace(
            st,
            name=f"seed{k}/{st.name}",
            args=[*st.args, "--seed_everything", str(k)],
            needs={opt: f"seed{k}/{src}" for opt, src in st.needs.items()},
            meta={**st.meta, "seed": k},
        )
        for k in seeds
        for st in stages
    ]


def load_config(path: str, seen: tuple = ()) -> dict:
    """A pipeline YAML; ``include: <pipeline YAML>`` starts from another one (its stages and run folder, so the
    stages they share are reused), this file's keys replacing the included file's."""
    if not os.path.isfile(path):
        raise PipelineError(f"pipeline config {path!r} does not exist")
    if os.path.abspath(path) in seen:
        raise PipelineError(f"pipeline config {path!r} includes itself (through {' -> '.join(seen)})")
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    base = cfg.pop("include", None)
    return {**load_config(base, (*seen, os.path.abspath(path))), **cfg} if base else cfg
