"""Fixtures shared by the test files (helpers they import live in ``helpers.py``)."""
# helpers first: it sets OMP_NUM_THREADS before torch is imported (import order exempt in pyproject.toml)

from helpers import ckpt, run_cli, tiny_overrides

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dense_ann_ckpt(tmp_path_factory) -> str:
    """A quickly trained robust digits ANN, shared by the conversion/pruning tests."""
    root = tmp_path_factory.mktemp("ann")
    run_cli("train.py", "fit", "--config", "conf/digits/ann.yaml", *tiny_overrides(root, epochs=2, batches=10))
    return ckpt(root)
