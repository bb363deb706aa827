"""A model card anyone can check: ``card.json`` beside ``attacks.json``, and the adversarial example of every sample
the evaluation broke in ``adversarial.safetensors.gz``.

A robust-accuracy number has two halves. A broken sample is proven by its example x' (the argmax of the model's logits
on x' is another class: ``margin = max_{k != y} z_k - z_y > 0``, or a tie broken to another class, margin 0, as
spike-count logits give; and ``||x' - x||_inf <= eps``, x' in [0, 1]); a robust
sample is backed by the list of what was tried (the card's budget and cost). ``verify`` checks the first half without
running any attack: the weights and the test images are the carded ones (SHA-256), every stored example lies in its
ball and fools the model, and the counts per epsilon add up to the card's worst case. A break whose margin is below
``MARGIN_TOLERANCE`` (relative to the logits' scale) may flip by floating-point noise on another machine: it is reported
apart, not as a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch

from srsnn.errors import UserError
from srsnn.robustness.results import EXAMPLES_FILE, margins

CARD_VERSION = 1
MARGIN_TOLERANCE = 1e-4  # relative to max |logit|: below it, a break may be floating-point noise


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of the state dict as saved: every entry's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def image_digests(x: torch.Tensor) -> list[str]:
    """SHA-256 of each image's float32 bytes (combined in index order by ``images_sha256``)."""
    x = x.detach().float().cpu().contiguous()
    return [hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in x]


def images_sha256(digests: list[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


@dataclass
class Card:
    """``card.json``: what was evaluated (the weights' and the test images' SHA-256), under which threat model, with
    what budget and cost, what came out per epsilon and per sample, and where the examples of the breaks are."""

    model: dict[str, Any]
    data: dict[str, Any]
    threat_model: dict[str, Any]
    evaluation: dict[str, Any]
    eps: dict[str, dict[str, Any]]
    samples: list[dict[str, Any]]
    examples: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    energy: Optional[dict[str, Any]] = None
    schema_version: int = CARD_VERSION

    def write(self, path: str) -> None:
        data = asdict(self)
        with open(path, "w") as f:
            json.dump({"schema_version": data.pop("schema_version"), **data}, f, indent=1)

    @classmethod
    def read(cls, path: str) -> "Card":
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: not a card.json ({type(err).__name__}: {err})") from None
        v = data.get("schema_version")
        if not isinstance(v, int) or v > CARD_VERSION:
            raise UserError(f"{path}: card schema_version {v!r} is not one this code reads (<= {CARD_VERSION})")
        try:
            return cls(**data)
        except TypeError as err:
            raise UserError(f"{path}: not a card.json ({err})") from None


def energy_section(energy: dict[str, Any]) -> dict[str, Any]:
    """The card's energy: synops per sample, E_dense / E_sparse (synops), the µJ estimate (SNN), or MACs (ANN)."""
    total = energy.get("total") or {}
    return {
        "synops_per_sample": total.get("synops"),
        "dense_over_sparse_synops": energy.get("synop_ratio_dense_over_sparse"),
        "macs_per_sample": energy.get("macs", energy.get("first_layer_macs")),
        "energy_uj_per_sample": energy.get("energy_uj"),
    }


def add_energy(card_path: str, energy: dict[str, Any]) -> None:
    """Put the energy accounting (``SpikeEnergyMonitor``, which runs after the evaluation) into an existing card."""
    if os.path.isfile(card_path):
        card = Card.read(card_path)
        card.energy = energy_section(energy)
        card.model["stored_bytes"] = (energy.get("storage") or {}).get("compact_bytes")
        card.write(card_path)


@dataclass
class Verdict:
    """What ``verify`` found: ``failures`` (each names the problem), breaks within floating-point noise apart."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def verify(
    card: Card, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, examples: dict[str, torch.Tensor]
) -> Verdict:
    """Check a card against the model and the test images it names (``x, y``: the test subset, in its order) and the
    stored examples, without any attack: hashes, the ball, [0, 1], misclassification, the counts per epsilon."""
    out = Verdict()
    if weights_sha256(model) != card.model["weights_sha256"]:
        out.failures.append("the weights are not the carded ones (SHA-256 differs): another model or a changed file")
        return out
    if len(x) != card.data["num_samples"] or images_sha256(image_digests(x)) != card.data["images_sha256"]:
        out.failures.append("the test images are not the carded ones (SHA-256 differs): another dataset or subset")
        return out
    idx = examples.get("index", torch.zeros(0, dtype=torch.int64))
    if len(idx):
        check_examples(model, x, y, examples, out)
    _check_counts(card, idx, examples.get("eps"), out)
    return out


def check_examples(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, examples: dict[str, torch.Tensor], out: Verdict
) -> None:
    """The stored examples (``index``, ``x``, ``eps``, ``margin``) against the clean images ``x`` and labels ``y``
    (indexed by sample): each lies in its eps ball and [0, 1] and fools ``model``; one that no longer fools it with a
    stored margin below ``MARGIN_TOLERANCE`` of its logits' scale is floating-point noise (``out.noise``)."""
    idx, adv, eps, stored = examples["index"], examples["x"], examples["eps"], examples["margin"]
    dist = (adv - x[idx]).flatten(1).abs().amax(1)
    for i in torch.nonzero((dist > eps + 1e-6) | (adv.flatten(1).amin(1) < 0) | (adv.flatten(1).amax(1) > 1)):
        out.failures.append(f"sample {int(idx[i])}: its example lies outside the eps={float(eps[i]):g} ball or [0, 1]")
    with torch.no_grad():
        logits = torch.cat([model(b) for b in adv.split(256)])
    m = margins(logits.float(), y[idx])
    scale = logits.abs().amax(1).clamp_min(1.0)
    fooled = logits.argmax(1) != y[idx]  # the evaluation's judgement (a tie broken to another class counts)
    for i in torch.nonzero(~fooled).flatten().tolist():
        k, now, was = int(idx[i]), float(m[i]), float(stored[i])
        line = f"sample {k} (eps={float(eps[i]):g}): no longer fools the model (margin {now:.3g}, stored {was:.3g})"
        (out.noise if abs(was) <= MARGIN_TOLERANCE * float(scale[i]) else out.failures).append(line)
    out.checked += len(idx)


def _check_counts(card: Card, idx: torch.Tensor, eps: Optional[torch.Tensor], out: Verdict) -> None:
    """Per epsilon: the samples the card calls broken are those with an example at that epsilon or below, and their
    number is the clean-correct count minus the worst case's robust count."""
    clean = {s["index"] for s in card.samples if s["clean_correct"]}
    at = {int(k): float(e) for k, e in zip(idx.tolist(), eps.tolist())} if eps is not None else {}
    for e, v in card.eps.items():
        proven = {k for k, ek in at.items() if ek <= float(e) + 1e-12 and k in clean}
        claimed = {s["index"] for s in card.samples if s["clean_correct"] and s["broken_by"].get(e)}
        if v["broken"] != len(claimed) or v["robust"] != len(clean) - len(claimed):
            out.failures.append(
                f"eps={e}: the counts do not add up (card: {v['broken']} broken and {v['robust']} robust of "
                f"{len(clean)} clean-correct; its samples: {len(claimed)} broken)"
            )
        elif proven != claimed:
            missing = sorted(claimed - proven)[:5]
            out.failures.append(f"eps={e}: {len(claimed - proven)} break(s) without an example (samples {missing})")


def _versions() -> dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "snntorch", "torchattacks", "sparse-robust-snn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def build_card(evaluation, per_sample, model: torch.nn.Module, datamodule, digests: list[str], preset: str) -> Card:
    """The card of one evaluation (``Evaluation``, ``PerSample``) of ``model`` on the test images of ``digests``."""
    from srsnn.pruning.masks import sparsity_report
    from srsnn.robustness.cost import totals

    neurons = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "reset_mem")})
    dm = type(datamodule)
    clean = [s for s in per_sample.samples if s.clean_correct]
    eps = {}
    for e, v in evaluation.eps.items():
        broken = sum(1 for s in clean if s.broken_by.get(e))
        eps[e] = {
            "clean_acc": evaluation.clean_acc,
            "worst": v.worst,
            "paper_protocol": v.paper_all,
            "converged": (v.confidence or {}).get("converged"),
            "bound": (v.confidence or {}).get("bound"),
            "broken": broken,
            "robust": len(clean) - broken,
        }
    by_phase = evaluation.passes_by_phase
    return Card(
        model={
            "weights_sha256": weights_sha256(model),
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "kind": evaluation.kind,
            "num_steps": getattr(model, "num_steps", None),
            "neurons": neurons,
            "sparsity": sparsity_report(model).get("global"),
        },
        data={
            "datamodule": f"{dm.__module__}.{dm.__qualname__}" if datamodule is not None else None,
            "split": "test",
            "num_samples": len(digests),
            "indices": [s.index for s in per_sample.samples],
            "images_sha256": images_sha256(digests),
        },
        threat_model={"norm": "Linf", "space": "pixels in [0, 1]", "epsilons": evaluation.epsilons},
        evaluation={
            "preset": preset,
            "budget": asdict(evaluation.budget),
            "passes_per_sample": totals(by_phase) if by_phase else None,
            "paper_passes_per_sample": totals(by_phase, "paper:") if by_phase else None,
            "seconds": evaluation.seconds,
            "versions": _versions(),
        },
        eps=eps,
        samples=[
            {"index": s.index, "clean_correct": s.clean_correct, "broken_by": s.broken_by} for s in per_sample.samples
        ],
        examples={"file": EXAMPLES_FILE, "count": None, "margin_tolerance": MARGIN_TOLERANCE},
    )
