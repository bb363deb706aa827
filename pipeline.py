"""``python pipeline.py ...``: every stage of a pipeline config, then the comparison report (the logic:
``srsnn_cli.pipeline``; installed: ``srsnn-pipeline``)."""

import sys

from srsnn_cli.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
