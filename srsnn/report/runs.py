"""Reading evaluated run folders: the evaluation files, what the stage is, and the fit's last validation."""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Any, Optional

from srsnn.errors import UserError
from srsnn.io.runs import files_under
from srsnn.robustness.results import Evaluation

from .per_sample import robust_samples

# a folder named like a pipeline stage, for runs without stage.json (evaluated outside a pipeline)
NAME = re.compile(
    r"^(?:(?P<method>[a-z]+?)(?P<pct>\d+)_)?(?:T(?P<T>\d+)_)?(?P<kind>ann|snn)(?P<converted>_converted)?_test$"
)


def load_run(folder: str) -> dict[str, Any]:
    found = files_under(folder, "evaluation", "attacks.json")
    if not found:
        raise UserError(
            f"no evaluation/attacks.json under {folder!r}; run `train.py test` with the "
            "AttackEvaluation and SpikeEnergyMonitor callbacks first"
        )
    ev = os.path.dirname(found[-1])
    run = {"name": os.path.basename(os.path.normpath(folder)), "attacks": Evaluation.read(found[-1])}
    run["stage"] = stage_info(folder, run["name"])
    energy = os.path.join(ev, "energy.json")
    run["energy"] = json.load(open(energy)) if os.path.exists(energy) else {}
    per_sample = os.path.join(ev, "per_sample.json")
    run["robust_samples"] = robust_samples(per_sample) if os.path.exists(per_sample) else None
    base = os.path.normpath(folder)[: -len("_test")] if os.path.normpath(folder).endswith("_test") else None
    run["fit"], run["converted"] = last_validation(base) if base else (None, None)
    return run


def stage_info(folder: str, name: str) -> Optional[dict[str, Any]]:
    """What a run is (pruning method or None for dense, sparsity, T, converted only): the ``stage.json`` a pipeline
    stage writes; for a run outside a pipeline, read from a folder named like a pipeline stage; else None."""
    path = os.path.join(folder, "stage.json")
    if os.path.exists(path):
        return json.load(open(path))
    m = NAME.match(name)
    return (
        {
            "method": m["method"],
            "sparsity": int(m["pct"]) / 100 if m["pct"] else 0.0,
            "T": int(m["T"]) if m["T"] else None,
            "converted_only": bool(m["converted"]),
        }
        if m
        else None
    )


def last_validation(folder: str) -> tuple[Optional[dict[str, Any]], Optional[dict[str, float]]]:
    """The last logged validation metrics of a fit (``val/acc``, ``val/pgd_acc_single_path``, epochs) and the
    converted SNN's before fine-tuning (``converted/val_acc``, ``converted/val_pgd_acc``, logged by ``ConvertedSNN``
    from the sanity check) under a run folder, over all its logs (a resumed fit logs to a new version folder);
    None where not logged."""
    rows = []
    for path in files_under(folder, "metrics.csv"):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    num = lambda v: float(v) if v not in (None, "") else None
    val = [r for r in rows if r.get("val/acc")]
    fit = (
        {
            "acc": num(val[-1]["val/acc"]),
            "pgd": num(val[-1].get("val/pgd_acc_single_path")),
            "epochs": int(val[-1]["epoch"]) + 1 if val[-1].get("epoch") else None,
        }
        if val
        else None
    )
    conv = next(
        (
            {"acc": num(r["converted/val_acc"]), "pgd": num(r.get("converted/val_pgd_acc"))}
            for r in rows
            if r.get("converted/val_acc")
        ),
        None,
    )
    return fit, conv
