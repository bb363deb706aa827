"""The one loader of objects named by a dotted path (``pkg.module.Name``): configs' class paths, recipes, specs."""

from __future__ import annotations

import importlib
from typing import Any


def import_dotted(path: str) -> Any:
    """The object ``path`` names; ImportError, AttributeError or ValueError (not a dotted path) as Python raises."""
    module, _, name = str(path).rpartition(".")
    if not module or not name:
        raise ValueError(f"{path!r} is not a dotted path (module.Name)")
    return getattr(importlib.import_module(module), name)
