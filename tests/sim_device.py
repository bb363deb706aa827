"""A simulated accelerator for tests: tensors that compute on the CPU but live on another device.

CI has no GPU, so "the wrong device" never happens there. Under ``simulated_accelerator()``:

* ``SimTensor`` is a ``__torch_dispatch__`` wrapper subclass around a CPU payload. It *reports* the ``meta``
  device (``SIM``), so nothing ever touches the CUDA runtime or a device guard, and every op unwraps the payload,
  runs on the CPU and wraps the result again.
* a ``TorchFunctionMode`` turns ``.to(SIM)``, ``.cuda()`` and factory calls with ``device=SIM`` into SimTensors
  and lets ``.tolist()``, ``.item()``, ``.numpy()``, ``bool()`` read the payload (a GPU tensor's values are
  readable too, by a synchronising copy).
* ``torch.distributed`` collectives are wrapped: they must receive accelerator tensors (NCCL's rule), then gloo
  runs them on the payloads.

The device rules mirror CUDA's, not stricter ones (each is proved in ``tests/test_accelerator.py``):

1. an op whose tensor arguments sit on both devices raises ``RuntimeError("Expected all tensors to be on the
   same device ...")``, except that 0-dim CPU tensors mix freely (CUDA treats them as scalars);
2. index tensors on the CPU may index an accelerator tensor (``x[cpu_idx]``), but an accelerator index cannot
   index a CPU tensor, and the values written by ``index_put_`` (``x[i] = v``) must share ``x``'s device
   (a 0-dim CPU value aside);
3. ``copy_`` and ``.to()`` cross devices (that is what they are for);
4. a ``torch.distributed`` collective on a CPU tensor raises (NCCL accepts CUDA tensors only).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

SIM = torch.device("meta")  # the device every SimTensor reports: no CUDA runtime, no real meta kernels ever run
aten = torch.ops.aten


def _same_device_error(op) -> RuntimeError:
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, "
        f"{SIM} (simulated accelerator) and cpu! ({op})"
    )


class SimTensor(torch.Tensor):
    """A tensor on the simulated accelerator: reports ``SIM``, holds and computes on a CPU ``payload``."""

    payload: torch.Tensor

    @staticmethod
    def __new__(cls, payload: torch.Tensor, requires_grad: bool = False):
        assert payload.device.type == "cpu" and not isinstance(payload, SimTensor)
        r = torch.Tensor._make_wrapper_subclass(
            cls,
            payload.size(),
            strides=payload.stride(),
            storage_offset=payload.storage_offset(),
            dtype=payload.dtype,
            layout=payload.layout,
            device=SIM,
            requires_grad=requires_grad,
        )
        r.payload = payload
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self, **_):
        return f"SimTensor({self.payload!r})"

    def __reduce_ex__(self, proto):  # torch.save of a GPU tensor stores its values: here, the payload's
        return self.payload.detach().__reduce_ex__(proto)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        _check_devices(func, args, kwargs)
        unwrap = lambda t: (
            t.payload
            if isinstance(t, SimTensor)
            else (torch.device("cpu") if isinstance(t, torch.device) and t == SIM else t)
        )
        inputs = {}
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, SimTensor):
                inputs[id(t.payload)] = t
        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        if func in _CPU_RESULT:
            return out

        def wrap(t):
            if isinstance(t, torch.Tensor) and not isinstance(t, SimTensor):
                same = inputs.get(id(t))  # in-place / out= ops return their argument: keep its wrapper
                return same if same is not None else SimTensor(t)
            return t

        return tree_map(wrap, out)


_CPU_RESULT = {aten._local_scalar_dense.default}  # .item(): a Python number
_COPY_OPS = {
    aten.copy_.default,
    aten._to_copy.default,
    aten.copy.default,
    aten._copy_from.default,
    aten._copy_from_and_resize.default,
}
_INDEX_OPS = {aten.index.Tensor, aten._unsafe_index.Tensor}
_INDEX_PUT = {
    aten.index_put_.default,
    aten.index_put.default,
    aten._index_put_impl_.default,
    aten._unsafe_index_put.default,
}


def _on_cpu(t) -> bool:
    return isinstance(t, torch.Tensor) and not isinstance(t, SimTensor) and t.dim() > 0


def _check_devices(func, args, kwargs) -> None:
    if func in _COPY_OPS:
        return
    if func in _INDEX_OPS or func in _INDEX_PUT:
        self, indices = args[0], [i for i in args[1] if i is not None]
        values = args[2:3] if func in _INDEX_PUT else []
        if not isinstance(self, SimTensor) and any(isinstance(i, SimTensor) for i in indices):
            raise RuntimeError(
                f"indices should be either on cpu or on the same device as the indexed tensor (cpu) ({func})"
            )
        if isinstance(self, SimTensor) and any(_on_cpu(v) for v in values):
            raise _same_device_error(func)
        if not isinstance(self, SimTensor) and any(isinstance(v, SimTensor) for v in values):
            raise _same_device_error(func)
        return
    flat = tree_flatten((args, kwargs))[0]
    if any(isinstance(t, SimTensor) for t in flat) and any(_on_cpu(t) for t in flat):
        raise _same_device_error(func)


class _ToSim(torch.autograd.Function):
    """CPU -> SIM with the autograd edge kept (as ``x.to('cuda')`` keeps it)."""

    @staticmethod
    def forward(ctx, t):
        return SimTensor(t.detach().clone() if t.requires_grad else t)

    @staticmethod
    def backward(ctx, g):
        return g.payload if isinstance(g, SimTensor) else g


def to_sim(t: torch.Tensor) -> torch.Tensor:
    if isinstance(t, SimTensor):
        return t
    if t.requires_grad and torch.is_grad_enabled():
        return _ToSim.apply(t)
    return SimTensor(t.detach() if t.requires_grad else t)


def _is_sim(device) -> bool:
    if device is None:
        return False
    if isinstance(device, str):
        device = torch.device(device)
    return isinstance(device, torch.device) and (device.type in ("meta", "cuda"))


_READ = {
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.item,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.__array__,
}
_FACTORIES = {
    torch.tensor,
    torch.as_tensor,
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.arange,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.linspace,
    torch.eye,
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.rand_like,
    torch.randn_like,
    torch.randint_like,
    torch.randperm,
    torch.Tensor.new_zeros,
    torch.Tensor.new_ones,
    torch.Tensor.new_empty,
    torch.Tensor.new_full,
    torch.Tensor.new_tensor,
    torch.scalar_tensor,
}


class SimulatedAccelerator(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _READ and args and isinstance(args[0], SimTensor):
            with torch._C.DisableTorchFunction():
                return func(args[0].payload.detach(), *args[1:], **kwargs)
        if func is torch.Tensor.to and not any(isinstance(a, torch.Tensor) for a in args[1:]):
            device, dtype, _non_blocking, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
            src = args[0]
            if device is not None and (_is_sim(device) or isinstance(src, SimTensor)):
                if isinstance(src, SimTensor) and not _is_sim(device):  # SIM -> CPU: a copy, as from a GPU
                    src = _FromSim.apply(src) if src.requires_grad else src.payload.detach().clone()
                keep = {k: v for k, v in (("dtype", dtype), ("memory_format", memory_format)) if v is not None}
                out = func(src, **keep) if keep else src
                return to_sim(out) if _is_sim(device) else out
        if func is torch.Tensor.cuda:
            return to_sim(args[0])
        if func is torch.Tensor.cpu and isinstance(args[0], SimTensor):
            return args[0].payload.detach().clone() if not args[0].requires_grad else _FromSim.apply(args[0])
        if func in _FACTORIES and _is_sim(kwargs.get("device")):
            kwargs = dict(kwargs, device="cpu")
            rg = kwargs.pop("requires_grad", False)
            out = func(*[a.payload if isinstance(a, SimTensor) else a for a in args], **kwargs)
            return SimTensor(out, requires_grad=rg)
        return func(*args, **kwargs)


class _SimFactories(TorchDispatchMode):
    """Factory ops that C++ code issues with a SimTensor's options (``at::empty(..., x.options())``) carry the
    reported device: make them on the CPU and wrap them, as a GPU would allocate on the GPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_sim(kwargs.get("device")) and not any(isinstance(t, SimTensor) for t in tree_flatten(args)[0]):
            out = func(*args, **dict(kwargs, device=torch.device("cpu")))
            return tree_map(lambda t: SimTensor(t) if isinstance(t, torch.Tensor) else t, out)
        return func(*args, **kwargs)


class _FromSim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.payload.detach().clone()

    @staticmethod
    def backward(ctx, g):
        return to_sim(g)


# ---- torch.distributed: NCCL's device rule, gloo's transport ---------------------------------------------
_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "broadcast",
    "reduce",
    "all_gather_into_tensor",
    "reduce_scatter",
    "gather",
    "scatter",
    "all_to_all",
)


def _collective(name: str, fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        cpu = [t for t in tensors if not isinstance(t, SimTensor)]
        if cpu:
            raise RuntimeError(
                f"torch.distributed.{name}: NCCL accepts accelerator tensors only, got a tensor "
                f"on {cpu[0].device} (create it on the data's device)"
            )
        unwrapped = tree_map(lambda t: t.payload if isinstance(t, SimTensor) else t, (args, kwargs))
        return fn(*unwrapped[0], **unwrapped[1])

    return run


@contextlib.contextmanager
def simulated_collectives() -> Iterator[None]:
    saved = {n: getattr(dist, n) for n in _COLLECTIVES if hasattr(dist, n)}
    try:
        for n, fn in saved.items():
            setattr(dist, n, _collective(n, fn))
        yield
    finally:
        for n, fn in saved.items():
            setattr(dist, n, fn)


@contextlib.contextmanager
def simulated_accelerator() -> Iterator[torch.device]:
    """``with simulated_accelerator() as dev: model.to(dev); ...``: ``dev`` behaves like a GPU (see module doc)."""
    with SimulatedAccelerator(), _SimFactories(), simulated_collectives():
        yield SIM


def on_sim(t: Any) -> bool:
    return isinstance(t, SimTensor)
