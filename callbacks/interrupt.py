"""``SaveOnInterrupt``: SIGTERM or Ctrl-C during ``fit`` saves a resumable checkpoint, then the run exits 1."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Optional

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info


@contextlib.contextmanager
def sigterm_as_interrupt(defer: Optional[threading.Event] = None):
    """SIGTERM raises KeyboardInterrupt (like Ctrl-C) while the block runs, so a long fit or evaluation stops within
    seconds through the same path as Ctrl-C; the previous handlers are restored afterwards.

    ``defer``: SIGTERM and Ctrl-C only set this event. Under DDP an exception raised in the middle of a collective
    leaves the other ranks in a half-received one (gloo: garbage sizes, "Connection closed by peer"); the code in
    the block polls the event and stops every rank at the same point instead (``Evaluator(stop=...)``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if defer is None:
            raise KeyboardInterrupt
        defer.set()

    signals = (signal.SIGTERM,) if defer is None else (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class SaveOnInterrupt(Callback):
    """SIGTERM (a scheduler's or ``kill``'s stop) is turned into Ctrl-C's KeyboardInterrupt while fitting; on either,
    the state at that point is saved as ``interrupted.ckpt`` beside ``last.ckpt`` (which stays the exact end-of-epoch
    resume point) and Lightning exits with status 1. Added to every ``train.py`` run."""

    def __init__(self):
        self._signals = contextlib.ExitStack()

    def on_fit_start(self, trainer, pl_module):
        self._signals.enter_context(sigterm_as_interrupt())

    def teardown(self, trainer, pl_module, stage):
        self._signals.close()  # the previous SIGTERM handler is back

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        cb = trainer.checkpoint_callback
        if cb is None or cb.dirpath is None or trainer.world_size > 1:  # saving is collective under DDP
            rank_zero_info("interrupted: no checkpoint saved at this point; resume from the last saved last.ckpt")
            return
        path = os.path.join(cb.dirpath, "interrupted.ckpt")
        trainer.save_checkpoint(path)
        last = os.path.join(cb.dirpath, "last.ckpt")
        rank_zero_info(
            f"interrupted: saved {path} (resume there with --ckpt_path {path}"
            + (f"; {last} is the exact end-of-epoch resume point)" if os.path.isfile(last) else ")")
        )
