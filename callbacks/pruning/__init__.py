"""Pruning schedules as callbacks, one module per method: put one in ``trainer.callbacks`` of a ``RobustANN`` run.

A method is one module of this package (``magnitude``, ``hydra``, ``harp``, ``channels``): a ``PruningSchedule``
subclass naming its ``method`` (the pipeline file's ``pruning: [{name: ...}]``), ``label`` and ``color`` (the report's
table and figures). Every module here is imported and its classes exported (``callbacks.HydraPruning``), and each
method is registered in ``srsnn.pruning.registry`` as its class is defined: adding a method touches its own module
(and, if you like, its YAML) and nothing else. All log per-layer and global sparsity (``sparsity/<layer>``,
``sparsity/global``) at every change.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import PruningSchedule, _net  # noqa: F401 - _net: for method modules (``from . import _net``)

__all__ = ["PruningSchedule"]
for _info in pkgutil.iter_modules(__path__):  # every method module: its classes become callbacks.<Class>
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name, _obj in vars(_module).items():
        if isinstance(_obj, type) and issubclass(_obj, PruningSchedule) and _obj.__module__ == _module.__name__:
            globals()[_name] = _obj
            __all__.append(_name)

from .magnitude import prune_by_magnitude  # noqa: E402, F401 - the one-shot step, for code that prunes by hand
