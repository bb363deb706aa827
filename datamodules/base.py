"""The contract every datamodule of this repo meets (see README, "Bring your own data").

A datamodule yields ``(image, label)`` batches with images as float tensors in **[0, 1]** (pixel space:
attacks and epsilon are defined there; normalisation belongs to the network) and integer labels in
``[0, num_classes)``. It exposes ``num_classes`` and ``input_shape`` (C, H, W), splits a validation set off
the training set with a seeded generator, and raises ``DataNotFoundError`` with the folder and the fix
when its files are missing.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from srsnn.types import FractionBelowOne

from .errors import DataError, DataNotFoundError  # noqa: F401 - DataNotFoundError: raised by the subclasses


class EpochShuffle(Sampler):
    """A fresh permutation per epoch from ``(seed, epoch)`` alone, so a run resumed from a checkpoint sees
    exactly the order an uninterrupted run sees (Lightning calls ``set_epoch`` every epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class ImageClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses set ``num_classes``, ``input_shape``, ``mean``, ``std`` and implement
    ``load()`` returning ``(train, train_eval, test)``: the training set with and without augmentation
    (same order, so the validation split can use the un-augmented copy) and the test set.

    Args:
        data_dir: where the files live (or are downloaded to).
        batch_size: training batch size (per device under DDP).
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        val_split: fraction of the training set held out for validation.
        seed: seed of the train/validation split (independent of the training seed).
    """

    num_classes: int = 0
    input_shape: tuple[int, int, int] = (0, 0, 0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 128,
        eval_batch_size: Optional[PositiveInt] = None,
        num_workers: NonNegativeInt = 0,
        val_split: FractionBelowOne = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_split = val_split
        self.seed = seed
        self.data_train: Optional[Dataset] = None
        self.data_val: Optional[Dataset] = None
        self.data_test: Optional[Dataset] = None

    def load(self) -> tuple[Dataset, Dataset, Dataset]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.data_train is not None:
            return
        train, train_eval, test = self.load()
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"{type(self).__name__}: the dataset in {self.data_dir!r} is empty; check the files")
        n_val = int(round(len(train) * self.val_split))
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        self.data_train = Subset(train, perm[n_val:])
        self.data_val = Subset(train_eval, perm[:n_val]) if n_val else Subset(test, list(range(len(test))))
        self.data_test = test

    def _loader(self, ds: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        # own generators: creating an iterator must not draw from the global RNG (exact resume)
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=EpochShuffle(len(ds), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self):
        return self._loader(self.data_train, True, self.batch_size)

    def val_dataloader(self):
        return self._loader(self.data_val, False, self.eval_batch_size)

    def test_dataloader(self):
        return self._loader(self.data_test, False, self.eval_batch_size)

    def calibration_batches(self, num_batches: int, batch_size: int) -> list[torch.Tensor]:
        """A deterministic list of training images (no augmentation) for threshold calibration."""
        self.setup("fit")
        g = torch.Generator().manual_seed(self.seed + 1)
        idx = torch.randperm(len(self.data_train), generator=g)[: num_batches * batch_size].tolist()
        images = torch.stack([self.data_train[i][0] for i in idx])
        return list(images.split(batch_size))
