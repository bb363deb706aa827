"""``python infer.py ...``: classify images with an exported model, without Lightning (the logic: ``srsnn_cli.infer``;
installed: ``srsnn-infer``)."""

import sys

from srsnn_cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
