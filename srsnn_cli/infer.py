"""Classify images with an exported model, without Lightning (torch, safetensors and snnTorch only).

    python infer.py model.safetensors images.npy            # images: [N, C, H, W] floats in [0, 1] (.npy or .pt)
    python infer.py model.safetensors --digits 10           # or the first N embedded test digits (needs scikit-learn)

``model.safetensors`` comes from ``python export.py ... --format compact``; ANN or SNN alike.
"""

from __future__ import annotations

import argparse
import sys

import torch

from srsnn.errors import UserError
from srsnn.export.compact import load_compact
from srsnn_cli import one_line_errors


def load_images(path: str) -> torch.Tensor:
    if path.endswith(".npy"):
        import numpy as np

        x = torch.from_numpy(np.load(path))
    else:
        x = torch.load(path, map_location="cpu", weights_only=True)
    x = x.float()
    if x.dim() != 4 or x.min() < 0 or x.max() > 1:
        raise UserError(f"{path}: expected images [N, C, H, W] with values in [0, 1], got shape {tuple(x.shape)}")
    return x


def _digit_classes(model: torch.nn.Module) -> int:
    """The model's class count, if the embedded digits (1 x 8 x 8, digits 0 .. K-1) can be its test data."""
    try:
        with torch.no_grad():
            k = int(model(torch.zeros(1, 1, 8, 8)).shape[1])
    except RuntimeError as err:
        raise UserError(
            f"--digits: the model does not take the embedded 8x8 grey digits ({str(err).splitlines()[0][:120]}); "
            "pass its own images instead (an .npy or .pt file of [N, C, H, W] in [0, 1])"
        ) from None
    if not 2 <= k <= 10:
        raise UserError(
            f"--digits: the model has {k} classes, the embedded digits 10; its accuracy on them would mean "
            "nothing. Pass its own test images instead"
        )
    if k < 10:
        print(f"the model has {k} classes: testing on the digits 0..{k - 1} (Digits(classes={k}))")
    return k


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("images", nargs="?")
    p.add_argument("--digits", type=int, default=0, help="use the first N embedded test digits instead")
    a = p.parse_args(argv)
    model = load_compact(a.model)
    if a.digits:
        from datamodules.embedded import Digits  # the embedded test split, as in training

        classes = _digit_classes(model)
        dm = Digits(classes=classes)
        dm.setup("test")
        x = torch.stack([dm.data_test[i][0] for i in range(a.digits)])
        y = [int(dm.data_test[i][1]) for i in range(a.digits)]
    elif a.images:
        x, y = load_images(a.images), None
    else:
        raise UserError("give an images file or --digits N")
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    print("predictions:", pred)
    if y is not None:
        print("labels:     ", y, f"  accuracy {sum(p == t for p, t in zip(pred, y)) / len(y):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
