"""Entry point: ``python train.py {fit,validate,test} --config conf/<dataset>/<stage>.yaml``.

A thin LightningCLI: model and data are chosen by ``class_path`` in the YAML (any LightningModule /
LightningDataModule, yours included). Trainer defaults: ``inference_mode: false`` (attacks in
validation/test need gradients), the seed fixed, the resolved config saved next to every run.
Bad input raises ``UserError``, printed as one line without a traceback.
"""
from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule, LightningModule
import os
import warnings

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from nets.errors import UserError

warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")


class SafeSaveConfig(SaveConfigCallback):
    """Saves the resolved config next to the run; refuses (never overwrites) when one is already there."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        try:
            super().setup(trainer, pl_module, stage)
        except RuntimeError as err:
            if "to NOT exist" not in str(err):
                raise
            where = trainer.log_dir or trainer.default_root_dir
            raise UserError(f"{os.path.join(where, self.config_filename)} already exists: this folder holds a "
                            "previous run, which is kept. Use a logger (a new version folder per run) or another "
                            "--trainer.default_root_dir.") from None


class CLI(LightningCLI):
    pass


def main(args=None) -> None:
    try:
        CLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            trainer_defaults={"inference_mode": False},
            save_config_callback=SafeSaveConfig,
            args=args,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        message = _config_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _config_error(err: ValueError) -> str | None:
    """jsonargparse reports a class that refused its arguments as a union mismatch; keep just the reasons."""
    text = str(err)
    if "Does not validate against any of the Union subtypes" not in text or "Errors:" not in text:
        return None
    reasons = []
    for line in text.split("Errors:", 1)[1].splitlines():
        line = line.strip()
        if line.startswith("Given value"):
            break
        if line.startswith("- ") and "Expected a <class 'NoneType'>" not in line:
            reasons.append(line[2:])
    return "invalid configuration: " + "; ".join(reasons) if reasons else None


if __name__ == "__main__":
    main()
