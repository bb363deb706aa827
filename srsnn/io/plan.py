"""A pipeline file -> its stages: the dense chain, the pruning sweep, the T sweep, your own SNNs, the converted-only
evaluations, once per seed (``srsnn.pipeline`` runs them)."""

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
    config: str
    args: list[str] = field(default_factory=list)
    needs: dict[str, str] = field(default_factory=dict)  # option -> stage whose checkpoint it takes
    kind: str = "ann"
    # what report.py reads from <stage>/stage.json: pruning method (None = dense) and sparsity, T (None = the
    # config's), evaluated right after conversion (no fine-tuning)
    meta: dict = field(default_factory=dict)


def plan(cfg: dict) -> list[Stage]:
    """Expand a pipeline config into its stages: the dense chain, the pruning sweep (every method x sparsity) and
    the time-step sweep (``t_sweep: {of: <run>, num_steps: [..]}``: that run's ANN converted and fine-tuned at
    each T), your own snnTorch SNNs (``native: [{name, config, args, fine_tune}]``: evaluated, and with
    ``fine_tune: true`` also fine-tuned and evaluated again) and the converted-only SNNs' evaluation
    (``converted_test: [<run>, ..]``: no fine-tuning)."""
    for key in ("run_dir", "ann", "snn"):
        if key not in cfg:
            raise PipelineError(f"pipeline config needs '{key}'")
    extra = cfg.get("args", {}) or {}
    a = lambda kind: [str(x) for x in extra.get(kind, [])]

    dense = {"method": None, "sparsity": 0.0, "T": None, "converted_only": False}
    metas = {"ann": dense}  # per ANN stage

    def snn_chain(tag: str, ann: str, more: list[str] = (), T: Optional[int] = None) -> list[Stage]:
        """Conversion + fine-tuning (``fit``), then evaluation (``test``) of one ANN stage."""
        meta = {**metas[ann], "T": T}
        return [
            Stage(
                f"{tag}snn",
                "fit",
                cfg["snn"],
                a("snn") + list(more),
                {"--model.init_args.ann_checkpoint": ann},
                "snn",
                meta,
            ),
            Stage(
                f"{tag}snn_test",
                "test",
                cfg["snn"],
                a("snn_test") + list(more),
                {"--ckpt_path": f"{tag}snn"},
                "snn",
                meta,
            ),
        ]

    stages = [
        Stage("ann", "fit", cfg["ann"], a("ann"), meta=dense),
        Stage("ann_test", "test", cfg["ann"], a("ann_test"), {"--ckpt_path": "ann"}, meta=dense),
        *snn_chain("", "ann"),
    ]
    for entry in cfg.get("pruning", []) or []:
        for s in entry.get("sparsity", []):
            tag = f"{entry['name']}{round(100 * float(s))}"
            metas[f"{tag}_ann"] = meta = {**dense, "method": entry["name"], "sparsity": float(s)}
            stages += [
                Stage(
                    f"{tag}_ann",
                    "fit",
                    entry["config"],
                    a("prune") + ["--trainer.callbacks.init_args.sparsity", str(s)],
                    {"--model.init_args.init_from": "ann"},
                    meta=meta,
                ),
                Stage(f"{tag}_ann_test", "test", cfg["ann"], a("ann_test"), {"--ckpt_path": f"{tag}_ann"}, meta=meta),
                *snn_chain(f"{tag}_", f"{tag}_ann"),
            ]

    def ann_of(key: str, of: str) -> str:
        """The ANN stage of a run named in ``key`` (``dense`` or ``<method><percent>``, e.g. ``hydra90``)."""
        if of == "dense":
            return "ann"
        if not any(st.name == f"{of}_ann" for st in stages):
            raise PipelineError(
                f"{key}: {of!r} is not a run of this pipeline; name one of "
                f"{['dense'] + [st.name[:-4] for st in stages if st.name.endswith('_ann')]}"
            )
        return f"{of}_ann"

    sweep = cfg.get("t_sweep") or {}
    ann = ann_of("t_sweep.of", sweep.get("of", "")) if sweep.get("num_steps") else None
    for t in sweep.get("num_steps", []):
        stages += snn_chain(f"{ann[:-3]}T{int(t)}_", ann, ["--model.init_args.num_steps", str(int(t))], int(t))
    for entry in cfg.get("native", []) or []:  # your own snnTorch SNNs (lightning_modules.NativeSNN), beside the rest
        if not (isinstance(entry, dict) and {"name", "config"} <= set(entry)):
            raise PipelineError(f"native: {entry!r} needs a name and a config (and args, fine_tune: true to fine-tune)")
        more, meta = [str(x) for x in entry.get("args", [])], {**dense, "method": "native"}
        tag = entry["name"]
        # the pipeline's args for native_test / native (not snn_test / snn: those may name the converted SNN's options)
        stages.append(Stage(f"{tag}_snn_test", "test", entry["config"], a("native_test") + more, kind="snn", meta=meta))
        if entry.get("fine_tune"):
            stages += [
                Stage(f"{tag}_tuned_snn", "fit", entry["config"], a("native") + more, kind="snn", meta=meta),
                Stage(
                    f"{tag}_tuned_snn_test",
                    "test",
                    entry["config"],
                    a("native_test") + more,
                    {"--ckpt_path": f"{tag}_tuned_snn"},
                    "snn",
                    meta,
                ),
            ]
    for of in cfg.get("converted_test", []) or []:  # conversion alone, evaluated like the fine-tuned SNNs
        ann = ann_of("converted_test", of)
        stages.append(
            Stage(
                f"{ann[:-3]}snn_converted_test",
                "test",
                cfg["snn"],
                a("snn_test"),
                {"--model.init_args.ann_checkpoint": ann},
                "snn",
                {**metas[ann], "converted_only": True},
            )
        )
    return over_seeds(stages, cfg.get("seeds"))


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
