"""Old class paths keep working: runs, checkpoints and exports written before the stage layout name their network
as ``nets.<module>.<Class>`` (in a saved ``config.yaml``, a checkpoint's hyperparameters or a compact file's spec).
Importing such a name gives the module that holds the class now; nothing named ``nets`` is installed."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

MOVED = {
    "architectures": "srsnn.ann.architectures",
    "pooling": "srsnn.ann.pooling",
    "errors": "srsnn.errors",
    "devices": "srsnn.devices",
    "modes": "srsnn.modes",
    "neurons": "srsnn.snn.neurons",
    "surrogates": "srsnn.snn.surrogates",
    "conversion": "srsnn.snn.conversion",
    "snn": "srsnn.snn.network",
    "spike_readers": "srsnn.snn.spike_readers",
    "synops": "srsnn.snn.synops",
    "masks": "srsnn.pruning.masks",
    "channels": "srsnn.pruning.channels",
    "compact": "srsnn.export.compact",
    "nir_export": "srsnn.export.nir",
    "attacks": "srsnn.robustness.attacks",
    "objectives": "srsnn.robustness.objectives",
    "reporting": "srsnn.robustness.reporting",
    "robustness": "srsnn.robustness.runner",
    "checkpoints": "srsnn.io.checkpoints",
    "runs": "srsnn.io.runs",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``nets`` -> an empty package; ``nets.<old>`` -> the module of ``MOVED`` (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "nets" or (fullname.startswith("nets.") and fullname[5:] in MOVED):
            return importlib.util.spec_from_loader(fullname, self, is_package=fullname == "nets")
        return None

    def create_module(self, spec):
        if spec.name == "nets":
            return types.ModuleType("nets", "class paths of runs written before the stage layout (srsnn.io.legacy)")
        return importlib.import_module(MOVED[spec.name[5:]])

    def exec_module(self, module):
        pass


def install() -> None:
    """Adds the finder once, after every real one: an importable ``nets`` of the user's own wins."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
