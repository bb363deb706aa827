"""Random images of a chosen shape: smoke-tests of a recipe at its true input shape, with no files (CI)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import TensorDataset

from .base import ImageClassificationDataModule
from .errors import DataError


class Synthetic(ImageClassificationDataModule):
    """``size`` uniform random images in [0, 1] of ``input_shape`` with labels cycling over ``num_classes``
    (seeded; a quarter held out as the test set). Learnable by nothing: for plumbing, never for numbers.
    ``download`` and ``augment`` are accepted and ignored, so a torchvision recipe's data block can switch to it
    with ``--data.class_path datamodules.Synthetic``."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: Sequence[int] = (3, 32, 32),
        size: int = 64,
        download: bool = False,
        augment: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_classes < 2 or size < 8 or len(input_shape) != 3 or min(input_shape) < 1:
            raise DataError(
                f"data: Synthetic needs num_classes >= 2, size >= 8 and a (C, H, W) input_shape, got "
                f"{num_classes}, {size}, {tuple(input_shape)}"
            )
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.size = int(size)

    def load(self):
        g = torch.Generator().manual_seed(self.seed)
        x = torch.rand(self.size, *self.input_shape, generator=g)
        y = torch.arange(self.size) % self.num_classes
        n_test = self.size // 4
        train = TensorDataset(x[n_test:], y[n_test:])
        return train, train, TensorDataset(x[:n_test], y[:n_test])
