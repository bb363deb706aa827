"""Every stage config of ``conf/`` resolved exactly as ``train.py`` resolves it (includes and overrides applied),
flattened to ``dotted.key -> value``. ``tests/resolved_configs.json`` holds these values as they were before
the configs were composed from shared parts; ``test_recipes.py`` checks every config still resolves to them.

    python tests/resolved_configs.py > tests/resolved_configs.json   # only when a change is meant
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_configs() -> list[str]:
    """The train.py configs of every dataset (pipeline files, which name a ``run_dir`` or ``include`` one, shared
    fragments and groups excluded), and the compositions the pipelines name (``a.yaml + conf/prune/hydra.yaml``)."""
    files = [
        str(p.relative_to(ROOT))
        for p in ROOT.glob("conf/*/*.yaml")
        if p.parent.name not in ("trainer", "shared", "prune")
        and not {"run_dir", "include"} & set(yaml.safe_load(p.read_text()) or {})
    ]
    composed = [
        " + ".join(entry["config"])
        for p in ROOT.glob("conf/*/pipeline.yaml")
        for entry in (yaml.safe_load(p.read_text()).get("pruning") or [])
        if not isinstance(entry["config"], str)
    ]
    return sorted(set(files + composed))


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def resolve(config: str) -> dict:
    """``resolve_nested(config)`` flattened to ``dotted.key -> value``."""
    return flatten(resolve_nested(config))


@functools.lru_cache(maxsize=None)
def resolve_nested(config: str) -> dict:
    """``train.py fit --config <config> --print_config`` (each file of ``a.yaml + b.yaml`` in order), run in this
    process (cached: do not mutate)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import train

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")  # the caller's own argv
        try:
            configs = [arg for c in config.split(" + ") for arg in ("--config", str(ROOT / c))]
            train.main(["fit", *configs, "--print_config"])
        except SystemExit:
            pass
    return yaml.safe_load(buf.getvalue())


if __name__ == "__main__":
    json.dump({c: resolve(c) for c in stage_configs()}, sys.stdout, indent=0, sort_keys=True)
