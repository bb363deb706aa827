"""The package layout: the method's stages as subpackages of ``srsnn``, and runs written before it still loading."""

import subprocess
import sys

from setuptools import find_packages

from helpers import ROOT


def test_no_generic_top_level_package_is_installed():
    tops = {
        p.split(".")[0]
        for p in find_packages(ROOT, include=["srsnn*", "lightning_modules*", "datamodules*", "callbacks*"])
    }
    assert tops == {"srsnn", "srsnn_cli", "lightning_modules", "datamodules", "callbacks"}
    assert {"srsnn.ann", "srsnn.snn", "srsnn.pruning", "srsnn.robustness", "srsnn.export", "srsnn.io"} <= set(
        find_packages(ROOT)
    )


def test_an_old_runs_class_path_builds_the_same_network():
    """A config.yaml or checkpoint from before the stage layout names ``nets.architectures.SmallCNN``."""
    code = (
        "from jsonargparse import ArgumentParser; import torch; import srsnn\n"
        "p = ArgumentParser(); p.add_argument('--net', type=torch.nn.Module)\n"
        "net = p.instantiate_classes(p.parse_object({'net': {'class_path': 'nets.architectures.SmallCNN', "
        "'init_args': {'width': 4}}})).net\n"
        "from srsnn.ann.architectures import SmallCNN; print(type(net) is SmallCNN)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
