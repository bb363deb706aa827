"""Entry point: ``python train.py {fit,validate,test} --config conf/<dataset>/<stage>.yaml``.

A thin LightningCLI: model and data are chosen by ``class_path`` in the YAML (any LightningModule /
LightningDataModule, yours included). Trainer defaults: ``inference_mode: false`` (attacks in
validation/test need gradients), the seed fixed, the resolved config saved next to every run.
Bad input raises ``UserError``, printed as one line without a traceback.
"""
from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from nets.errors import UserError


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
            args=args,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
