"""The paper's architectures in plain torch, built so that every activation slot can hold a spiking neuron.

All networks use average pooling, BatchNorm and ``nn.ReLU`` in the *neuron slots*; the ANN is the same
network as the SNN with ReLU in those slots ("the SNN with T = 0"). Conversion (``srsnn.snn.conversion``)
swaps every ``nn.ReLU`` for an ``IFNeuron`` and keeps everything else.

Every network is an ``nn.Sequential`` whose first module is ``Normalize``: inputs stay in [0, 1] pixel space,
so attacks and epsilon are defined there, and the per-dataset normalisation is part of the model.

The arguments that follow from the data (``num_classes``, ``in_channels``, ``input_size``, ``mean``, ``std``) default
to ``None``: under ``train.py`` that means "the datamodule's" (``lightning_modules.loading.link_data_arguments``);
in plain torch the architecture's usual values (``DATA_DEFAULTS``) and no normalisation.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from srsnn.ann.pooling import AvgPool2d


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the identity when no statistics are given."""

    def __init__(self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None):
        super().__init__()
        mean = torch.tensor(mean if mean is not None else [0.0]).view(1, -1, 1, 1)
        std = torch.tensor(std if std is not None else [1.0]).view(1, -1, 1, 1)
        if (std <= 0).any():
            raise ValueError(f"Normalize: std must be positive, got {std.flatten().tolist()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean) / self.std


class Merge(nn.Module):
    """Residual merge ``a * skip + (1 - a) * branch`` with a trainable ``a`` (init 0.5), clamped to [0, 1] — in the
    ANN and in the SNN alike (as IGITUGraz/RobustSNNConversion's ``ConvexCombination``), so conversion changes
    the neurons only."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(0.5))

    def forward(self, branch, skip):
        a = self.alpha.clamp(0, 1)
        return a * skip + (1 - a) * branch


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


# (num_classes, in_channels, input_size) used for arguments left None outside train.py
DATA_DEFAULTS = {"SmallCNN": (10, 1, 8), "VGG": (10, 3, 32), "PreActResNet": (10, 3, 32), "WRN28_4": (100, 3, 32)}


def _data_args(
    arch: str, num_classes: Optional[int], in_channels: Optional[int], input_size: Optional[int]
) -> tuple[int, int, int]:
    """The given values, ``DATA_DEFAULTS[arch]`` where None; each a positive integer."""
    values = tuple(d if v is None else v for v, d in zip((num_classes, in_channels, input_size), DATA_DEFAULTS[arch]))
    for name, value in zip(("num_classes", "in_channels", "input_size"), values):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return values


class _Net(nn.Sequential):
    """Common helpers: the architecture's own config is kept for checks and exports."""

    def _flat_features(self, in_channels: int, input_size: int) -> int:
        with torch.no_grad():
            x = torch.zeros(1, in_channels, input_size, input_size)
            for m in self:
                x = m(x)
        return x.numel()


class SmallCNN(_Net):
    """Small CNN for digits / MNIST: conv(w)-conv(w)-pool-conv(2w)-pool-linear."""

    def __init__(
        self,
        num_classes: Optional[int] = None,
        in_channels: Optional[int] = None,
        input_size: Optional[int] = None,
        width: int = 16,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ):
        num_classes, in_channels, input_size = _data_args("SmallCNN", num_classes, in_channels, input_size)
        if input_size < 4:
            raise ValueError(f"SmallCNN needs input_size >= 4 (two 2x2 poolings), got {input_size}")
        layers = [Normalize(mean, std)]
        layers += _conv_bn_relu(in_channels, width) + _conv_bn_relu(width, width) + [AvgPool2d(2)]
        layers += _conv_bn_relu(width, 2 * width) + [AvgPool2d(2), nn.Flatten()]
        super().__init__(*layers)
        self.append(nn.Linear(self._flat_features(in_channels, input_size), num_classes))


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(_Net):
    """VGG with average pooling; the CPAL form of VGG-16 has 13 conv layers and a 256-256 head.

    ``width`` scales every conv layer (1.0 = the paper's widths)."""

    def __init__(
        self,
        variant: str = "vgg16",
        num_classes: Optional[int] = None,
        in_channels: Optional[int] = None,
        input_size: Optional[int] = None,
        width: float = 1.0,
        head: Sequence[int] = (256, 256),
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ):
        num_classes, in_channels, input_size = _data_args("VGG", num_classes, in_channels, input_size)
        if variant not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG variant {variant!r}; choose one of {sorted(VGG_CONFIGS)}")
        layers: list[nn.Module] = [Normalize(mean, std)]
        cin, size = in_channels, input_size
        for v in VGG_CONFIGS[variant]:
            if v == "M":
                if size >= 2:  # small inputs (e.g. 8x8 digits) skip the pools they cannot afford
                    layers.append(AvgPool2d(2))
                    size //= 2
            else:
                cout = max(1, int(round(v * width)))
                layers += _conv_bn_relu(cin, cout)
                cin = cout
        layers.append(nn.Flatten())
        super().__init__(*layers)
        features = self._flat_features(in_channels, input_size)
        for h in head:
            self.append(nn.Linear(features, h))
            self.append(nn.ReLU())
            features = h
        self.append(nn.Linear(features, num_classes))


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv-BN-ReLU-conv, merged with the (projected) skip."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        self.merge = Merge()

    def forward(self, x):
        out = self.act1(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(self.act2(self.bn2(self.conv1(out))))
        return self.merge(out, skip)


class PreActResNet(_Net):
    """Pre-activation ResNet / Wide ResNet. ResNet-20: ``blocks=3, widen=1``; WRN-28-4: ``blocks=4, widen=4``."""

    def __init__(
        self,
        blocks: int = 3,
        widen: int = 1,
        num_classes: Optional[int] = None,
        in_channels: Optional[int] = None,
        input_size: Optional[int] = None,
        base_width: int = 16,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ):
        num_classes, in_channels, input_size = _data_args("PreActResNet", num_classes, in_channels, input_size)
        if blocks < 1 or widen < 1:
            raise ValueError(f"blocks and widen must be >= 1, got blocks={blocks}, widen={widen}")
        layers: list[nn.Module] = [Normalize(mean, std), nn.Conv2d(in_channels, base_width, 3, 1, 1, bias=False)]
        cin = base_width
        for stage, mult in enumerate((1, 2, 4)):
            cout = base_width * mult * widen
            for i in range(blocks):
                layers.append(PreActBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1))
                cin = cout
        layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
        super().__init__(*layers)


def ResNet20(
    num_classes: Optional[int] = None, in_channels: Optional[int] = None, input_size: Optional[int] = None, **kw
) -> PreActResNet:
    return PreActResNet(3, 1, num_classes, in_channels, input_size, **kw)


def WRN28_4(
    num_classes: Optional[int] = None, in_channels: Optional[int] = None, input_size: Optional[int] = None, **kw
) -> PreActResNet:
    return PreActResNet(4, 4, *_data_args("WRN28_4", num_classes, in_channels, input_size), **kw)
