"""The entry points, apart from the plain-torch package ``srsnn`` and above the Lightning layer: each ``main`` parses
its command line, calls the library and turns a ``srsnn.errors.UserError`` into one ``error:`` line and exit code 2.

``train`` (``train.py``, the LightningCLI) and its ``options``; ``pipeline`` (``pipeline.py``); ``report``
(``report.py``); ``export`` (``export.py``); ``infer`` (``infer.py``). Installed: ``srsnn-train``, ``srsnn-pipeline``,
``srsnn-report``, ``srsnn-export``, ``srsnn-infer``.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

from srsnn.errors import UserError


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """``main`` with a ``UserError`` shown as one ``error:`` line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 2

    return wrapped
