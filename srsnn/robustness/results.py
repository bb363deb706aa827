"""What an evaluation writes to disk, typed: ``attacks.json`` (``Evaluation``) and ``per_sample.json`` (``PerSample``).

One schema for the writer (``AttackEvaluation``), the readers (``report.py``, ``report.py compare``) and anyone's
second opinion. Every file carries ``schema_version``; older files still read (version 0: no version, the keys of
version 1; ``attacks.json`` version 2 renamed ``broken_by_stage``, ``seconds_by_stage``, ``rank_attack`` and a
check's ``kind`` to ``broken_by_phase``, ``seconds_by_phase``, ``ranking_attack`` and ``rule``; version 3 added
``passes_by_phase``; version 4's per-epsilon ``confidence`` bounds the next check round by a Poisson limit against a
``tolerance``, ``srsnn.robustness.audit.confidence``: a version-3 one still reads and says its rule), and a newer
version than this code knows is refused with one clear error.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from srsnn.errors import UserError

SCHEMA_VERSION = 4  # attacks.json (3: passes_by_phase, older files read with it empty; 4: the convergence rule)
RECORD_VERSION = 1  # per_sample.json and energy.json: their keys are those of version 1

# version 1 -> 2, per object: an evaluation has phases (paper, rank, adaptive, ...), a check follows a rule
_RENAMED_IN_2 = {
    "evaluation": {"seconds_by_stage": "seconds_by_phase"},
    "eps": {"broken_by_stage": "broken_by_phase"},
    "budget": {"rank_attack": "ranking_attack"},
    "check": {"kind": "rule"},
}


def _current(data: dict, what: str, version: int) -> dict:
    """``data`` (an object of a ``version`` file) with this version's keys."""
    names = _RENAMED_IN_2[what] if version < 2 else {}
    return {names.get(k, k): v for k, v in data.items()}


def _check_version(data: dict, path: str, newest: int) -> None:
    v = data.get("schema_version", 0)
    if not isinstance(v, int) or v > newest:
        raise UserError(f"{path}: schema_version {v!r} is newer than this code's {newest}; update sparse-robust-snn")


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read it as JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found a {type(data).__name__}")
    return data


def _fields(cls, data: dict, path: str) -> dict:
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise UserError(f"{path}: not a {cls.__name__} record (missing {', '.join(missing)})")
    return {k: v for k, v in data.items() if k in {f.name for f in fields}}


class _Json:
    """``to_json``: the dataclass as the JSON object written to disk, ``schema_version`` first."""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {"schema_version": out.pop("schema_version"), **out}

    def write(self, path: str, **dump: Any) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, **dump)


@dataclass
class Check:
    """One audit check: ``passed`` or not; a failed ``finding`` is a result about the paper's protocol, any other
    failed check puts the evaluation in doubt (``srsnn.robustness.audit.verdict``)."""

    check: str
    passed: bool
    detail: str
    rule: str = ""
    eps: str = ""
    finding: bool = False


@dataclass
class EpsResult:
    """Accuracies at one epsilon (fractions of the evaluated samples). ``worst``: per sample, broken by anything run;
    ``paper``: per paper-protocol attack; ``paper_all``: robust to all of them; ``broken_by_phase``: samples each
    phase beyond the protocol broke on its survivors; ``check_rounds``: samples broken by each check round."""

    worst: float
    paper_all: float
    paper: dict[str, float]
    overestimate_points: float
    broken_by_phase: dict[str, int] = field(default_factory=dict)
    top_k: list[str] = field(default_factory=list)
    check_rounds: list[int] = field(default_factory=list)
    confidence: Optional[dict[str, Any]] = None


@dataclass
class Budget:
    """What ran, in words: the paper protocol, the attack that ranked the paths, the adaptive tier, transfer and the
    SNN-specific paths (None = not run)."""

    paper: str
    ranking_attack: Optional[str] = None
    adaptive: Optional[str] = None
    transfer: Optional[str] = None
    snn_paths: Optional[str] = None


@dataclass
class MembersAlone:
    """Each gradient path attacked alone (``attack`` at ``eps``): its robust accuracy; ``top_k`` the paths the
    adaptive tier went on with, strongest first."""

    eps: str
    attack: str
    accuracy: dict[str, float]
    top_k: list[str]


@dataclass
class Evaluation(_Json):
    """``attacks.json``: one model's evaluation."""

    kind: str
    num_samples: int
    clean_acc: float
    num_classes: Optional[int]
    epsilons: list[float]
    ensemble: list[str]
    budget: Budget
    eps: dict[str, EpsResult]
    tuning: Optional[dict[str, Any]] = None
    audit: list[Check] = field(default_factory=list)
    confidence: list[str] = field(default_factory=list)
    interrupted: Optional[str] = None
    zero_gradient_samples_by_path: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    members_alone: Optional[MembersAlone] = None
    seconds: Optional[float] = None
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
    # passes of the model per evaluated sample, per phase: {phase: {"forward": f, "backward": b}} (version 3; ``cost``)
    passes_by_phase: dict[str, dict[str, float]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: dict, path: str = "attacks.json") -> "Evaluation":
        _check_version(data, path, SCHEMA_VERSION)
        version = data.get("schema_version", 0)
        kw = _fields(cls, _current(data, "evaluation", version), path)
        kw["budget"] = Budget(**_fields(Budget, _current(kw["budget"], "budget", version), path))
        kw["eps"] = {
            e: EpsResult(**_fields(EpsResult, _current(v, "eps", version), path)) for e, v in kw["eps"].items()
        }
        kw["audit"] = [Check(**_fields(Check, _current(c, "check", version), path)) for c in kw.get("audit") or []]
        if kw.get("members_alone"):
            kw["members_alone"] = MembersAlone(**_fields(MembersAlone, kw["members_alone"], path))
        kw["schema_version"] = SCHEMA_VERSION  # read into this version's fields
        return cls(**kw)

    @classmethod
    def read(cls, path: str) -> "Evaluation":
        return cls.from_json(_read_json(path), path)


PER_SAMPLE_NOTE = (
    "broken_by: the first attack/member that broke the sample at that epsilon (null = robust "
    "to everything run; 'clean' = misclassified without attack; '@eps=E': broken at a smaller "
    "epsilon E); paper: the member that broke it under each paper-protocol attack"
)


@dataclass
class SampleRecord:
    """One test sample: its global index, clean correctness, and per epsilon what broke it (None = robust)."""

    index: int
    clean_correct: bool
    broken_by: dict[str, Optional[str]]
    paper: dict[str, dict[str, Optional[str]]] = field(default_factory=dict)


@dataclass
class PerSample(_Json):
    """``per_sample.json``: a record per sample, in the order of the test subset. Another attack (a second opinion)
    writes the same format with ``paper`` left empty."""

    samples: list[SampleRecord]
    note: str = PER_SAMPLE_NOTE
    schema_version: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        return {"schema_version": out["schema_version"], "note": out["note"], "samples": out["samples"]}

    @classmethod
    def from_json(cls, data: dict, path: str = "per_sample.json") -> "PerSample":
        _check_version(data, path, RECORD_VERSION)
        if not isinstance(data.get("samples"), list):
            raise UserError(f"{path}: not a per_sample.json (no 'samples' list)")
        samples = [SampleRecord(**_fields(SampleRecord, s, path)) for s in data["samples"]]
        return cls(samples=samples, note=data.get("note", PER_SAMPLE_NOTE))

    @classmethod
    def read(cls, path: str) -> "PerSample":
        return cls.from_json(_read_json(path), path)


EXAMPLES_FILE = "adversarial.safetensors.gz"


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How far the model is fooled: the best wrong logit minus the true one (> 0: misclassified)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    wrong = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(1)
    return wrong - true


class Examples:
    """The adversarial example of every broken sample at the smallest epsilon that broke it (this process): keyed by
    the sample's global index, ``(eps, x', margin)``."""

    def __init__(self):
        self.found: dict[int, tuple[float, torch.Tensor, float]] = {}

    def keep(self, keys: list[int], eps: float, adv: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        m = margins(logits.detach().float(), y)
        # fooled as the evaluation judges it: the argmax is another class (a tie whose first maximum is another class
        # counts, margin 0: spike-count logits tie often)
        for r in torch.nonzero(logits.argmax(1) != y).flatten().tolist():
            k = keys[r]
            if k not in self.found or eps < self.found[k][0]:
                self.found[k] = (float(eps), adv[r].detach().float().cpu().clone(), float(m[r]))

    def write(self, path: str) -> int:
        """Write them (sorted by index) compressed; returns the file's size in bytes."""
        from safetensors.torch import save

        keys = sorted(self.found)
        tensors = {
            "index": torch.tensor(keys, dtype=torch.int64),
            "eps": torch.tensor([self.found[k][0] for k in keys], dtype=torch.float64),
            "margin": torch.tensor([self.found[k][2] for k in keys], dtype=torch.float32),
        }
        if keys:
            tensors["x"] = torch.stack([self.found[k][1] for k in keys])
        with gzip.open(path, "wb", compresslevel=9) as f:
            f.write(save(tensors))
        return os.path.getsize(path)

    @staticmethod
    def read(path: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        try:
            with gzip.open(path, "rb") as f:
                return load(f.read())
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"{path}: cannot read the adversarial examples ({type(err).__name__}: {err})") from None
