"""Tiny-ImageNet-200 (64x64 RGB, 200 classes) from its released ImageFolder layout.

    <data_dir>/tiny-imagenet-200/wnids.txt
    <data_dir>/tiny-imagenet-200/train/<wnid>/images/*.JPEG       500 per class
    <data_dir>/tiny-imagenet-200/val/images/*.JPEG                10,000, labels in val/val_annotations.txt

The official test split has no labels, so (as in the TMLR/CPAL papers and most robustness work) the labelled
val split is the test set, and the validation set is split off the training set.
"""

from __future__ import annotations

import os

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.utils import download_and_extract_archive

from .torchvision_sets import TorchvisionDataModule

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


class _AnnotatedImages(Dataset):
    """Images in one folder with their class listed in an annotation file (``file<TAB>wnid<TAB>...``)."""

    def __init__(self, folder: str, annotations: str, class_to_idx: dict[str, int], transform=None):
        self.items = []
        with open(annotations) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 2:
                    if parts[1] not in class_to_idx:
                        raise ValueError(f"{annotations} names class {parts[1]!r}, which has no training folder")
                    self.items.append((os.path.join(folder, parts[0]), class_to_idx[parts[1]]))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        with Image.open(path) as im:
            image = im.convert("RGB")  # a few Tiny-ImageNet images are greyscale
        return (self.transform(image) if self.transform else image), label


class TinyImageNet(TorchvisionDataModule):
    """Tiny-ImageNet-200 with random crop (pad 4, i.e. 64 -> 72 -> 64) and horizontal flip.
    ``download=True`` fetches and unpacks the 237 MB zip into ``data_dir`` once (online)."""

    dataset_name, num_classes, input_shape = "TinyImageNet", 200, (3, 64, 64)
    layout = "the released layout (tiny-imagenet-200/train/<wnid>/images/, val/images/, val/val_annotations.txt)"
    mean, std = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
    augment = [T.RandomCrop(64, padding=4), T.RandomHorizontalFlip()]

    @property
    def root(self) -> str:
        return os.path.join(self.data_dir, "tiny-imagenet-200")

    def prepare_data(self) -> None:
        if self.download and not os.path.isdir(os.path.join(self.root, "train")):
            self._guarded(lambda: download_and_extract_archive(URL, self.data_dir))

    def _make(self, train: bool, transform):
        classes = ImageFolder(os.path.join(self.root, "train"), transform=transform)
        if len(classes.classes) != self.num_classes:
            raise ValueError(f"found {len(classes.classes)} class folders in {self.root}/train, expected 200")
        if train:
            return classes
        val = os.path.join(self.root, "val")
        return _AnnotatedImages(
            os.path.join(val, "images"), os.path.join(val, "val_annotations.txt"), classes.class_to_idx, transform
        )
