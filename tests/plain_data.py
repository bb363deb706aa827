"""A plain ``LightningDataModule`` (not this repo's base class): 5 classes of synthetic 3x16x16 images, with
nothing but train/val/test dataloaders, as a user would plug in their own data."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class PlainData(L.LightningDataModule):
    def __init__(self, batch_size: int = 32, test_size: int = 64):
        super().__init__()
        self.batch_size, self.test_size = batch_size, test_size

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        protos = torch.rand(5, 3, 16, 16, generator=g)

        def split(n):
            y = torch.randint(0, 5, (n,), generator=g)
            x = (0.7 * protos[y] + 0.3 * torch.rand(n, 3, 16, 16, generator=g)).clamp(0, 1)
            return TensorDataset(x, y)

        self.train, self.val, self.test = split(256), split(64), split(self.test_size)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=self.batch_size)


class NormalisedDigits(L.LightningDataModule):
    """The digits normalised by the datamodule itself (x - mean) / std, as many torchvision pipelines do: values
    outside [0, 1], which this repo refuses (normalisation is the network's first layer)."""

    num_classes, input_shape = 10, (1, 8, 8)

    def __init__(self, batch_size: int = 32):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        from datamodules import Digits

        dm = Digits()
        x, y = next(iter(DataLoader(dm.load()[0], batch_size=10_000)))
        self.train = self.test = TensorDataset((x - 0.2) / 0.3, y)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.test, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=self.batch_size)
