"""What a run folder holds: the files ``train.py`` wrote under it, found by name at any depth, oldest first (the
one lookup behind checkpoints given as run folders, the pipeline's stages and the report). No torch import."""

from __future__ import annotations

import glob
import os
from typing import Optional


def files_under(folder: str, *pattern: str) -> list[str]:
    """Paths matching ``<folder>/**/<pattern...>`` (e.g. ``"evaluation", "attacks.json"``), by modification time."""
    return sorted(glob.glob(os.path.join(folder, "**", *pattern), recursive=True), key=os.path.getmtime)


def newest_under(folder: str, *pattern: str) -> Optional[str]:
    """The most recently written match of ``files_under``, or None."""
    found = files_under(folder, *pattern)
    return found[-1] if found else None
