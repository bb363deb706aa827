"""Random starts keyed to the sample, not to its batch.

torchattacks draws a batch's random starts from one stream, so which samples an attack breaks depends on their
batch: its size, its other samples, the process it runs on. Here every draw shaped like the batch ([B, ...]) takes
row i from the stream of sample i, seeded by (the attack run's seed, the sample's global index); every other draw
(a scalar, or a pattern the batch shares, e.g. Square's window and its sign per channel) comes from one stream seeded
by the run alone, the same sequence whatever the batch holds. So one process, N processes or nodes, any batch size
and any prefix of the test subset attack a sample from the same starts.

Where an attack subsets its batch itself (APGD's restarts and APGD-T's targets run on the samples still robust),
its ``attack_single_run`` is wrapped and each row is matched to its sample by content.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator, Sequence

import torch
from torch.overrides import TorchFunctionMode


def mix(*parts) -> int:
    """A 63-bit seed from any parts (stable across processes and Python runs, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _size(args) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(int(s) for s in args[0])
    return tuple(int(s) for s in args)


_DRAWS = frozenset(
    {torch.rand, torch.randn, torch.rand_like, torch.randn_like, torch.Tensor.uniform_, torch.Tensor.normal_}
    | {torch.randint, torch.randperm, torch.bernoulli, torch.multinomial}
)  # the random functions ``_Draws`` serves or routes to its own generator


class _Draws(TorchFunctionMode):
    """Serves torch's random draws from per-sample streams (batch-shaped draws) or one shared stream (the rest)."""

    def __init__(self, streams: Sequence[torch.Generator], shared: torch.Generator, ndim: int):
        super().__init__()
        self.streams, self.shared, self.ndim = list(streams), shared, ndim

    def _draw(self, fn, size: tuple[int, ...], dtype, device) -> torch.Tensor:
        if len(size) == self.ndim and size and size[0] == len(self.streams):
            out = torch.stack([fn(size[1:], generator=g, dtype=dtype) for g in self.streams])
        else:
            out = fn(size, generator=self.shared, dtype=dtype)
        return out if device is None else out.to(device)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # every torch function the attacked model calls passes through here: those that draw nothing leave at once
        # (bench/keyed_overhead.py: the mode costs under 2 % of an attack step)
        if func not in _DRAWS:
            return func(*args, **(kwargs or {}))
        kwargs = dict(kwargs or {})
        if func in (torch.rand, torch.randn) and "generator" not in kwargs and "out" not in kwargs:
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            return self._draw(func, _size(args), dtype, kwargs.get("device"))
        if func in (torch.rand_like, torch.randn_like):
            t, fn = args[0], torch.rand if func is torch.rand_like else torch.randn
            return self._draw(fn, tuple(t.shape), kwargs.get("dtype") or t.dtype, kwargs.get("device") or t.device)
        if func is torch.Tensor.uniform_:
            t = args[0]
            lo = args[1] if len(args) > 1 else kwargs.get("from", 0.0)
            hi = args[2] if len(args) > 2 else kwargs.get("to", 1.0)
            with torch.no_grad():
                return t.copy_(self._draw(torch.rand, tuple(t.shape), t.dtype, t.device) * (hi - lo) + lo)
        if func is torch.Tensor.normal_:
            t = args[0]
            mean = args[1] if len(args) > 1 else kwargs.get("mean", 0.0)
            std = args[2] if len(args) > 2 else kwargs.get("std", 1.0)
            with torch.no_grad():
                return t.copy_(self._draw(torch.randn, tuple(t.shape), t.dtype, t.device) * std + mean)
        if func in (torch.randint, torch.randperm, torch.bernoulli, torch.multinomial) and "generator" not in kwargs:
            if all(a.device.type == "cpu" for a in args if isinstance(a, torch.Tensor)) and kwargs.get("device") in (
                None,
                "cpu",
                torch.device("cpu"),
            ):
                kwargs["generator"] = self.shared  # not keyed per sample, but independent of the global stream
        return func(*args, **kwargs)


@contextlib.contextmanager
def keyed_random(
    attack, x: torch.Tensor, keys: Sequence[int], seed: int, on_start=None, on_iterate=None
) -> Iterator[None]:
    """While an attack runs on ``x`` (rows = the samples ``keys``), serve its random draws per sample.
    ``on_start``: called before every start (``attack_single_run``): state a start must not inherit from another
    (ASSG's running means) is reset, since which samples a restart holds depends on the others.
    ``on_iterate(rows, iterate)``: called after every start with its samples' keys and the start's best iterate (the
    first tensor it returns shaped like its input: APGD's and APGD-T's highest-loss point, Square's lowest-margin
    one, SA-PGD's and targeted PGD's result), which ``attack`` itself returns only where it fooled the model."""
    streams: dict[int, torch.Generator] = {}

    def stream(key: int) -> torch.Generator:
        if key not in streams:
            streams[key] = torch.Generator().manual_seed(mix(seed, key))
        return streams[key]

    def draws(rows: Sequence[int], ndim: int) -> _Draws:
        return _Draws([stream(k) for k in rows], torch.Generator().manual_seed(mix(seed, "shared")), ndim)

    single = getattr(attack, "attack_single_run", None)
    if single is None:
        if on_start is not None:
            on_start()
        with draws(list(keys), x.dim()):
            yield
        return
    lookup = {row.cpu().numpy().tobytes(): k for row, k in zip(x.detach(), keys)}

    def wrapped(xs: torch.Tensor, *args, **kwargs):
        rows = [lookup.get(r.detach().cpu().numpy().tobytes()) for r in xs]
        if None in rows:
            raise RuntimeError(f"{type(attack).__name__}: an attacked row is none of the batch's samples")
        if on_start is not None:
            on_start()
        with draws(rows, xs.dim()):
            result = single(xs, *args, **kwargs)
        if on_iterate is not None:
            parts = result if isinstance(result, tuple) else (result,)
            best = next((t for t in parts if torch.is_tensor(t) and t.shape == xs.shape), None)
            if best is not None:
                on_iterate(rows, best.detach())
        return result

    attack.attack_single_run = wrapped  # the instance's own, for this call only
    try:
        yield
    finally:
        del attack.attack_single_run
