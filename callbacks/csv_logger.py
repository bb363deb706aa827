"""``ResumableCSVLogger``: Lightning's CSV logger, except that a resumed run appends to the metrics it had.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder already holds files ("Previous log files ...
will be deleted"), so resuming a fit in its own version folder (what ``train.py`` does) lost every row logged
before the interruption. Here the rows stay: the existing header is read back, new keys widen it (the old rows
are rewritten with empty cells), and the new rows are appended. Rows of epochs that ran after the last checkpoint
and are run again on resume appear twice, in the order they were logged.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's version deletes metrics.csv
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` (same arguments) that never deletes the metrics already in its folder."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
