"""``python report.py ...``: the comparison report of evaluated runs, or ``compare`` of two per-sample files (the
logic: ``srsnn_cli.report``; installed: ``srsnn-report``)."""

import sys

from srsnn_cli.report import main

if __name__ == "__main__":
    sys.exit(main())
