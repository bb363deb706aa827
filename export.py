"""``python export.py ...``: a trained model to compact safetensors or NIR (the logic: ``srsnn.export.cli``;
installed: ``srsnn-export``)."""

import sys

from srsnn.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
