"""Build a trained LightningModule from its config + checkpoint, outside ``trainer.fit`` (export, transfer)."""
from __future__ import annotations

import warnings

from nets.checkpoints import read_checkpoint
from nets.errors import UserError


def build_from_config(config: str):
    """The model and datamodule a config describes, parsed exactly as ``train.py`` parses it."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    with warnings.catch_warnings():  # the caller's own argv (export.py, pytest) is not meant for this parser
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                           run=False, save_config_callback=None, args=["--config", config],
                           trainer_defaults={"logger": False})
    net_cfg = cli.config.model.init_args.net
    spec = {"net": {"class_path": net_cfg.class_path, "init_args": dict(net_cfg.init_args)}}
    return cli.model, cli.datamodule, spec


def load_trained(config: str, ckpt_path: str):
    """``(model in eval mode, datamodule, spec)``; the checkpoint is read with ``weights_only=True``."""
    model, dm, spec = build_from_config(config)
    ckpt = read_checkpoint(ckpt_path, "checkpoint")
    model.on_load_checkpoint(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"{ckpt_path!r} does not fit the model of {config!r}: {str(err).splitlines()[0][:200]}") from None
    model.eval()
    spec["kind"] = model.kind
    if model.kind == "snn":
        spec["snn"] = {"num_steps": model.snn.num_steps, "encoding": model.snn.encoding, "neuron": model.neuron_kwargs}
    return model, dm, spec
