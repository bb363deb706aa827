"""From a config to modules: the network's data-dependent arguments read from the datamodule (``train.py`` and
here), and a trained LightningModule built from its config + checkpoint outside ``trainer.fit`` (export, transfer)."""

from __future__ import annotations

import warnings

from jsonargparse import Namespace

from srsnn.errors import UserError
from srsnn.io.checkpoints import read_checkpoint, resolve_checkpoint
from srsnn.io.dotted import import_dotted

# the network arguments that follow from the data, read from the datamodule where a config leaves them null. Not
# jsonargparse's link_arguments: a link replaces a value the config sets (a wrong num_classes would be silently
# fixed instead of refused) and refuses every network without all the linked parameters (your own SNN)
_DATA_LINKS = {
    "num_classes": lambda dm: int(dm.num_classes),
    "in_channels": lambda dm: int(dm.input_shape[0]),
    "input_size": lambda dm: int(dm.input_shape[1]) if dm.input_shape[1] == dm.input_shape[2] else None,  # square nets
    "mean": lambda dm: [float(v) for v in dm.mean],
    "std": lambda dm: [float(v) for v in dm.std],
}


def plain_numbers(cfg):
    """``cfg`` with the parser's checked numbers (``PositiveInt(3)`` ...) as the plain ``int`` / ``float`` they
    stand for: modules save their arguments into checkpoints, which ``torch.load(weights_only=True)`` and YAML
    read only as plain types."""
    if isinstance(cfg, Namespace):
        for key, value in vars(cfg).items():
            setattr(cfg, key, plain_numbers(value))
        return cfg
    if isinstance(cfg, list):
        return [plain_numbers(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: plain_numbers(v) for k, v in cfg.items()}
    if type(cfg).__module__ == "jsonargparse.typing":
        for plain in (int, float, str):
            if isinstance(cfg, plain):
                return plain(cfg)
    return cfg


def link_data_arguments(cfg: Namespace) -> None:
    """Fill ``model.init_args.net.init_args`` keys that are null (``num_classes``, ``in_channels``, ``input_size``,
    ``mean``, ``std``) from the datamodule's attributes (``num_classes``, ``input_shape`` = (C, H, W), ``mean``,
    ``std``), so a new dataset needs no network arguments. A value the config sets is kept (setup checks it against
    the data); a datamodule without the attribute leaves it null (the architecture's default, checked at setup)."""
    net = cfg.get("model.init_args.net") if cfg.get("model") is not None else None
    args = net.get("init_args") if isinstance(net, Namespace) else None
    missing = [k for k in _DATA_LINKS if args is not None and k in args and args[k] is None]
    data = cfg.get("data")
    if not missing or not isinstance(data, Namespace) or not data.get("class_path"):
        return
    try:
        init = data.get("init_args")
        dm = import_dotted(data.class_path)(**(init.as_dict() if isinstance(init, Namespace) else {}))
    except Exception:  # noqa: BLE001 - the datamodule's own instantiation reports its error right after
        return
    for key in missing:
        try:
            args[key] = _DATA_LINKS[key](dm)
        except (AttributeError, IndexError, TypeError):
            pass  # this datamodule does not say


_MODEL_KEYS = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler")


def _model_config(config: str) -> str:
    """``config`` as the model-building parser takes it: a run's saved ``config.yaml`` also holds the subcommand's
    own keys (``ckpt_path``, ``weights_only``), which are dropped; anything but a YAML mapping is one clear error."""
    import os

    import yaml

    if not os.path.isfile(config):
        raise UserError(f"config {config!r} does not exist")
    try:
        with open(config) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise UserError(f"config {config!r} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise UserError(
            f"config {config!r} is not a YAML mapping of options (it holds a {type(cfg).__name__}); "
            "pass the YAML of a run (conf/<dataset>/<stage>.yaml or a run's config.yaml)"
        )
    if "ckpt_path" not in cfg:
        return config  # may include other files relative to its own folder: pass the path itself
    # a run's saved config: the subcommand's own arguments (ckpt_path, weights_only, ...) go; it is fully resolved
    # (no includes), so its content will do
    return yaml.safe_dump({k: v for k, v in cfg.items() if k in _MODEL_KEYS})


def build_from_config(config: str):
    """The model and datamodule a config describes (a stage's YAML or a run's saved ``config.yaml``), parsed exactly
    as ``train.py`` parses it."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    class _LinkedCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            link_data_arguments(plain_numbers(self.config))

    with warnings.catch_warnings():  # the caller's own argv (export.py, pytest) is not meant for this parser
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = _LinkedCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            save_config_callback=None,
            args=["--config", _model_config(config)],
            trainer_defaults={"logger": False},
        )
    net_cfg = cli.config.model.init_args.net
    spec = {"net": {"class_path": net_cfg.class_path, "init_args": dict(net_cfg.init_args)}}
    return cli.model, cli.datamodule, spec


def load_trained(config: str, ckpt_path: "str | None"):
    """``(model in eval mode, datamodule, spec)``, the weights from ``ckpt_path`` (read with ``weights_only=True``) or,
    without one, as the config builds them (an snnTorch SNN's ``weights`` file)."""
    model, dm, spec = build_from_config(config)
    if ckpt_path:
        ckpt = read_checkpoint(resolve_checkpoint(ckpt_path, "checkpoint"), "checkpoint")
        model.on_load_checkpoint(ckpt)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except (KeyError, RuntimeError) as err:
            raise UserError(
                f"{ckpt_path!r} does not fit the model of {config!r}: {str(err).splitlines()[0][:200]}"
            ) from None
    model.eval()
    spec["kind"] = model.kind
    if model.kind == "snn" and hasattr(model, "snn"):
        spec["snn"] = {"num_steps": model.snn.num_steps, "encoding": model.snn.encoding, "neuron": model.neuron_kwargs}
    return model, dm, spec
