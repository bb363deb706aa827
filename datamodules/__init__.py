"""Lightning datamodules: images in [0, 1], ``num_classes`` and ``input_shape`` exposed (see ``base``)."""

from .base import ImageClassificationDataModule
from .embedded import Digits, MNIST5k
from .errors import DataError, DataNotFoundError
from .synthetic import Synthetic
from .tiny_imagenet import TinyImageNet
from .torchvision_sets import CIFAR10, CIFAR100, MNIST, SVHN, FashionMNIST

__all__ = [
    "ImageClassificationDataModule",
    "DataError",
    "DataNotFoundError",
    "Digits",
    "MNIST5k",
    "MNIST",
    "FashionMNIST",
    "CIFAR10",
    "CIFAR100",
    "SVHN",
    "TinyImageNet",
    "Synthetic",
]
