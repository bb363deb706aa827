"""``python export.py ...``: a trained model to compact safetensors or NIR (the logic: ``srsnn_cli.export``;
installed: ``srsnn-export``)."""

import sys

from srsnn_cli.export import main

if __name__ == "__main__":
    sys.exit(main())
