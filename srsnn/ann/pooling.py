"""2x2 average pooling, ``y = (x00 + x01 + x10 + x11) / 4`` per window: the pooling of SmallCNN and VGG.

``AvgPool2d`` is ``nn.AvgPool2d`` (same arguments, same ``isinstance``, same state) with a faster path for the
case the networks hit: kernel 2, stride 2, no padding, an NCHW-contiguous input on the CPU. There PyTorch's
kernel measured 2-3x slower than four strided adds forward and four strided copies backward (single-channel
inputs keep the digits and MNIST nets in NCHW, and pooling then took a tenth of an attack's time). The fast
path gives the same numbers as ``F.avg_pool2d``: it sums each window in the kernel's order (row by row) and
divides by 4, and its gradient is ``dL/dy / 4`` copied to the four inputs of the window. Anything else goes to
``F.avg_pool2d``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair


class _AvgPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        win = x.view(n, c, h // 2, 2, w // 2, 2)
        out = torch.add(win[:, :, :, 0, :, 0], win[:, :, :, 0, :, 1])
        out += win[:, :, :, 1, :, 0]
        out += win[:, :, :, 1, :, 1]
        return out.div_(4)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = grad.shape
        # + 0.0: PyTorch accumulates into a zeroed gradient, which turns -0.0 into +0.0; so do we
        g = grad.div(4).add_(0.0)
        out = torch.empty((n, c, h, 2, w, 2), dtype=grad.dtype, device=grad.device)
        for i in (0, 1):
            for j in (0, 1):
                out[:, :, :, i, :, j] = g
        return out.view(n, c, 2 * h, 2 * w)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` with the fast exact path above for 2x2/stride-2 pooling of NCHW CPU tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _AvgPool2x2.apply(x) if self._fast_path_is_exact(x) else super().forward(x)

    def _fast_path_is_exact(self, x: torch.Tensor) -> bool:
        window = _pair(self.kernel_size) == _pair(self.stride) == (2, 2) and _pair(self.padding) == (0, 0)
        # float32/64 only: the kernel accumulates 16-bit inputs in float32, four 16-bit adds would round differently
        return (
            window
            and self.divisor_override is None
            and x.dim() == 4
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.is_contiguous()
            and x.shape[-2] % 2 == 0
            and x.shape[-1] % 2 == 0
        )
