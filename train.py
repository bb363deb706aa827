"""``python train.py ...``: train, convert, fine-tune or evaluate one stage with a config from conf/ (the logic:
``srsnn_cli.train``; installed: ``srsnn-train``)."""

import sys

from srsnn_cli.train import main

if __name__ == "__main__":
    sys.exit(main())
