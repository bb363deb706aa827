"""What the tests share: running the entry points as a user would, tiny run settings, finding outputs."""

import os
import subprocess
import sys
from pathlib import Path

# every process a test spawns (train.py, pipeline.py, DDP workers) uses one thread: two pytest workers share 2 cores,
# and oversubscribed torch processes slow each other far more than 2x
os.environ["OMP_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=ROOT, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python train.py ...`` (or another script) as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``python train.py ...`` in this process (no interpreter start: for the many quick bad-input cases)."""
    import contextlib
    import io
    import logging
    import warnings

    import train

    out, err, code = io.StringIO(), io.StringIO(), 0
    handler, lightning_log = logging.StreamHandler(err), logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(handler)  # Lightning's info lines (rank_zero_info) as a terminal would show them
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        try:
            train.main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            lightning_log.removeHandler(handler)
    return subprocess.CompletedProcess(["train.py", *args], code, out.getvalue(), err.getvalue())


def tiny_overrides(root: Path, epochs: int = 1, batches: int = 3) -> list[str]:
    return [
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        str(batches),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.limit_test_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(root),
    ]


# a converted SNN that builds in seconds: T = 2, thresholds from 2 calibration batches at T_c = 4
TINY_SNN = [
    "--model.init_args.num_steps",
    "2",
    "--model.init_args.calib_steps",
    "4",
    "--model.init_args.calib_batches",
    "2",
]

# the evaluation callbacks on 10 test images with a minimal budget: for tests of the plumbing, not of robustness
TINY_EVAL = """
trainer:
  callbacks:
    - class_path: callbacks.AttackEvaluation
      init_args:
        attacks: [{name: fgsm}]
        epsilons: [0.1]
        num_samples: 10
        batch_size: 10
        adaptive: {top_k: 1, steps: 2, max_targets: 2, square_queries: 10, check_rounds: 1, snn_steps: 4,
                   snn_restarts: 1}
    - class_path: callbacks.SpikeEnergyMonitor
      init_args: {num_samples: 10}
"""


def tiny_eval(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_eval.yaml"
    path.write_text(TINY_EVAL)
    return str(path)


def ckpt(root: Path, name: str = "last.ckpt") -> str:
    found = sorted(Path(root).rglob(name))
    assert found, f"no {name} under {root}"
    return str(found[-1])


def tiny_recipe_fit(config: str, data_dir, root) -> list[str]:
    """``fit`` of a paper recipe on a few images in ``data_dir``: one batch (fast_dev_run), 1/8 of the width, one attack
    step, no logger, on the CPU (``train.main`` arguments; prefix ``train.py`` for ``run_cli``)."""
    return [
        "fit", "--config", config, "--trainer.fast_dev_run", "true",
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "4", "--model.init_args.net.init_args.width", "0.125",
        "--model.init_args.attack_steps", "1", "--model.init_args.eval_steps", "1",
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.accelerator", "cpu",
    ]  # fmt: skip
