"""bench/snn_step.py, the speed claim's tool: it runs every variant and reports the default schedule's ratio per net."""

import re
import subprocess
import sys

from helpers import ROOT


def test_snn_step_bench_times_every_variant_and_finds_the_time_schedule_exact():
    out = subprocess.run(
        [
            sys.executable,
            "bench/snn_step.py",
            "--nets",
            "digits",
            "--T",
            "2",
            "--batch",
            "4",
            "--steps",
            "1",
            "--min_seconds",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for variant in ("naive snnTorch loop", "naive loop, NHWC input", "layer sched", "time sched"):
        assert re.search(rf"{variant}\s*:\s*[0-9.]+ ms/step", text), (variant, text)
    # the time schedule runs the very same arithmetic as the naive loop: bit-identical outputs, eval and train mode
    diffs = re.findall(r"time schedule, BN in (eval|train) mode: max abs diff ([0-9.e+-]+)", text)
    assert [m for m, _ in diffs] == ["eval", "train"] and all(float(d) == 0 for _, d in diffs), text
    last = text.strip().splitlines()[-1]
    assert re.search(r"digits [0-9.]+x$", last), last  # the summary line, one ratio per net benched
