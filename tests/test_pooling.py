import pytest
import torch
import torch.nn.functional as F

from srsnn.ann.pooling import AvgPool2d, _AvgPool2x2


def _fwd_bwd(pool, x, g):
    x = x.clone().requires_grad_(True)
    y = pool(x)
    (gx,) = torch.autograd.grad(y, x, g)
    return y, gx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spikes", [False, True])
def test_fast_path_gives_avg_pool2d_numbers_forward_and_backward(dtype, spikes):
    torch.manual_seed(0)
    x = (torch.rand(37, 5, 6, 10) < 0.3).to(dtype) if spikes else torch.randn(37, 5, 6, 10, dtype=dtype) * 3
    g = torch.randn(37, 5, 3, 5, dtype=dtype)
    g[0, 0] = -0.0  # a negative-zero gradient comes out as PyTorch's +0.0
    ours = _fwd_bwd(_AvgPool2x2.apply, x, g)
    ref = _fwd_bwd(lambda t: F.avg_pool2d(t, 2), x, g)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)  # bit for bit, not approximately
        assert torch.equal(torch.signbit(a), torch.signbit(b))


def test_module_takes_the_fast_path_only_where_it_is_exact(monkeypatch):
    calls = []
    real = _AvgPool2x2.apply
    monkeypatch.setattr(_AvgPool2x2, "apply", lambda x: calls.append(tuple(x.shape)) or real(x))
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(AvgPool2d(2)(x), F.avg_pool2d(x, 2)) and calls == [(4, 3, 8, 8)]
    others = [
        (AvgPool2d(2), x.contiguous(memory_format=torch.channels_last)),  # NHWC: PyTorch's kernel is fast there
        (AvgPool2d(2), torch.randn(4, 3, 7, 8)),  # odd size
        (AvgPool2d(3), x),
        (AvgPool2d(2, stride=1), x),
        (AvgPool2d(2, padding=1), x),
        (AvgPool2d(2, divisor_override=3), x),
        (AvgPool2d(2), x.to(torch.bfloat16)),
    ]
    for pool, inp in others:
        ref = torch.nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, divisor_override=pool.divisor_override)
        assert torch.equal(pool(inp), ref(inp))
    assert calls == [(4, 3, 8, 8)]
