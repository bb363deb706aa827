"""``python pipeline.py ...``: every stage of a pipeline config, then the comparison report (the logic:
``srsnn.pipeline``; installed: ``srsnn-pipeline``)."""

import sys

from srsnn.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
