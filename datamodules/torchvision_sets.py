"""Standard datasets through torchvision (downloaded once when online, then read from ``data_dir``)."""

from __future__ import annotations

import os
from typing import Any

import torchvision
from torchvision import transforms as T

from .base import DataNotFoundError, ImageClassificationDataModule


class TorchvisionDataModule(ImageClassificationDataModule):
    """A torchvision dataset. ``download=True`` fetches it into ``data_dir`` when online; offline and not on
    disk, setup raises ``DataNotFoundError`` naming the folder and how to get the files."""

    dataset_name = ""
    layout = "torchvision's layout"
    augment: list[Any] = []

    def __init__(self, download: bool = False, augment: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.download = download
        self.use_augment = augment

    def _make(self, train: bool, transform):  # pragma: no cover - overridden where the API differs
        cls = getattr(torchvision.datasets, self.dataset_name)
        return cls(self.data_dir, train=train, transform=transform, download=self.download)

    def prepare_data(self) -> None:
        if self.download:
            self._guarded(lambda: (self._make(True, None), self._make(False, None)))

    def _guarded(self, fn):
        try:
            return fn()
        except Exception as err:
            where = os.path.abspath(self.data_dir)
            how = (
                "run once with network access and --data.init_args.download true, or copy the dataset "
                f"files into {where} in {self.layout}"
            )
            raise DataNotFoundError(
                f"{self.dataset_name} was not found in {where} ({type(err).__name__}: {str(err).splitlines()[0][:120]}). "  # noqa: E501
                f"To fix: {how}. Offline alternatives that need no files: conf/digits/*, conf/mnist5k/*."
            ) from None

    def load(self):
        plain = T.ToTensor()
        train_tf = T.Compose([*self.augment, T.ToTensor()]) if (self.augment and self.use_augment) else plain
        return self._guarded(lambda: (self._make(True, train_tf), self._make(True, plain), self._make(False, plain)))


class MNIST(TorchvisionDataModule):
    dataset_name, num_classes, input_shape = "MNIST", 10, (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)


class FashionMNIST(TorchvisionDataModule):
    dataset_name, num_classes, input_shape = "FashionMNIST", 10, (1, 28, 28)
    mean, std = (0.2860,), (0.3530,)


class CIFAR10(TorchvisionDataModule):
    """CIFAR-10 with the paper's augmentation: random crop (pad 4) + horizontal flip."""

    dataset_name, num_classes, input_shape = "CIFAR10", 10, (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]


class CIFAR100(CIFAR10):
    dataset_name, num_classes = "CIFAR100", 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class SVHN(TorchvisionDataModule):
    """SVHN (train/test splits; no flip: digits are not mirror-symmetric)."""

    dataset_name, num_classes, input_shape = "SVHN", 10, (3, 32, 32)
    mean, std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    augment = [T.RandomCrop(32, padding=4)]

    def _make(self, train: bool, transform):
        return torchvision.datasets.SVHN(
            self.data_dir, split="train" if train else "test", transform=transform, download=self.download
        )
