"""What an evaluation costs, in passes of the deployed model, counted where they are spent.

A pass is one forward of the model on one sample (an SNN's forward over its T steps is one pass; an EOT model's call
is one pass however many draws it averages) or one backward through such a forward. ``PassCounter`` counts them per
phase (``tuning``, ``paper:<attack>``, ``rank:<attack>``, ``adaptive:<attack>``, ``square:square``,
``check<k>:<attack>`` and ``square<k>:square`` for the k-th check round, ``audit``) on this process; ``per_sample``
sums them over processes and divides by the evaluated samples.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


class PassCounter:
    """Forward and backward passes of ``model`` per phase, in samples: a forward on a batch of b images adds b
    forwards, a backward through that forward's output adds b backwards. Use ``with PassCounter(model) as c:`` around
    the evaluation and ``with c.phase(name):`` around each part; ``c.counts``: {phase: [forwards, backwards]}."""

    def __init__(self, model: nn.Module):
        self.model, self.counts, self.current = model, {}, "other"
        self._handle = None

    def __enter__(self) -> "PassCounter":
        self._handle = self.model.register_forward_hook(self._forward)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """What runs inside counts for ``name`` (entered on every process in the same order, so every process has
        the same phases in the same order, the ones it had no sample for included)."""
        previous, self.current = self.current, name
        self.counts.setdefault(name, [0, 0])
        try:
            yield
        finally:
            self.current = previous

    def _forward(self, module: nn.Module, inputs, out) -> None:
        if not torch.is_tensor(out):
            return
        rows, counts = int(out.shape[0]), self.counts.setdefault(self.current, [0, 0])
        counts[0] += rows
        if out.requires_grad:
            out.register_hook(lambda grad: _add(counts, rows))

    def per_sample(self, samples: int, reduce: Callable[[torch.Tensor], torch.Tensor], device) -> dict[str, dict]:
        """{phase: {"forward": f, "backward": b}} per evaluated sample, summed over processes (``reduce``)."""
        names = list(self.counts)
        local = torch.tensor([self.counts[n] for n in names] or [[0, 0]], dtype=torch.float64, device=device)
        summed = reduce(local).cpu().tolist()
        n = max(samples, 1)
        return {k: {"forward": f / n, "backward": b / n} for k, (f, b) in zip(names, summed)}


def _add(counts: list[int], rows: int) -> None:
    counts[1] += rows


def totals(by_phase: dict[str, dict], prefix: str = "") -> dict[str, float]:
    """Forwards and backwards per sample over the phases whose name starts with ``prefix`` (all by default)."""
    chosen = [v for k, v in by_phase.items() if k.startswith(prefix)]
    return {"forward": sum(v["forward"] for v in chosen), "backward": sum(v["backward"] for v in chosen)}
