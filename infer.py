"""``python infer.py ...``: classify images with an exported model, without Lightning (the logic: ``srsnn.infer``;
installed: ``srsnn-infer``)."""

import sys

from srsnn.infer import main

if __name__ == "__main__":
    sys.exit(main())
