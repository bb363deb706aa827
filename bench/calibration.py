"""What conversion costs at the paper's setting: threshold calibration of the CIFAR-10 VGG-16 (3x32x32).

Stage 2 of the paper calibrates layer by layer from the first, each on ``calib_batches`` x ``calib_batch_size``
training images (paper: 10 x 64) run for T_c = 100 steps with the earlier layers spiking
(``srsnn.snn.conversion.calibrate_thresholds``), then re-estimates the BatchNorm statistics at T. The cost grows
linearly with the number of images, so on a CPU (where the full setting takes the best part of an hour) the bench
calibrates ``--measure-images`` of them and scales the time to the full 640, labelled as such; on a GPU it runs the
full setting. Random weights and images: the cost does not depend on their values.

    python bench/calibration.py [--device cuda] [--measure-images 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from srsnn.ann.architectures import VGG  # noqa: E402
from srsnn.snn.conversion import convert  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--calib-batches", type=int, default=10)
    p.add_argument("--calib-batch-size", type=int, default=64)
    p.add_argument("--calib-steps", type=int, default=100)
    p.add_argument(
        "--measure-images",
        type=int,
        default=None,
        help="images actually calibrated (default: all on a GPU, 8 on a CPU); the time is scaled to all",
    )
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    full = a.calib_batches * a.calib_batch_size
    n = min(full, a.measure_images or (full if a.device.startswith("cuda") else 8))
    torch.manual_seed(0)
    ann = VGG(a.arch, num_classes=10, in_channels=3, input_size=32).to(a.device).eval()
    images = torch.rand(n, 3, 32, 32, device=a.device)
    batches = list(images.split(min(n, a.calib_batch_size)))
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    convert(ann, batches, num_steps=8, calib_steps=a.calib_steps)
    sync()
    seconds = time.perf_counter() - t0
    res = {
        "device": a.device,
        "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "arch": a.arch,
        "input": [3, 32, 32],
        "calib_steps": a.calib_steps,
        "images_full": full,
        "images_measured": n,
        "seconds_measured": round(seconds, 2),
        "seconds_full": round(seconds * full / n, 1),
        "extrapolated": n < full,
        "torch": torch.__version__,
    }
    how = "measured" if n == full else f"extrapolated linearly from {n} images ({seconds:.1f} s measured)"
    print(
        f"calibration of {a.arch} (3x32x32), {a.calib_batches} x {a.calib_batch_size} images, T_c = {a.calib_steps}, "
        f"on {res['device_name']} ({res['threads']} threads): {res['seconds_full']:.1f} s ({how})"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
