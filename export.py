"""Export a trained (sparse) ANN or SNN for deployment.

    python export.py --config conf/digits/snn.yaml --ckpt_path <.ckpt> --out model.safetensors            # compact
    python export.py --config conf/digits/snn.yaml --ckpt_path <.ckpt> --out model.nir --format nir       # NIR graph

The config is the one the checkpoint was trained with (it defines the architecture); the checkpoint is read
with ``weights_only=True``. ``compact`` writes values + uint8 relative indices (``nets.compact``); load it
back with ``nets.compact.load_compact(path)``, no Lightning needed.
"""
from __future__ import annotations

import argparse
import sys

from nets.errors import UserError


def build_from_config(config: str):
    """The LightningModule a config describes, built through the same LightningCLI parser as train.py."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                       run=False, save_config_callback=None, args=["--config", config],
                       trainer_defaults={"logger": False})
    net_cfg = cli.config.model.init_args.net
    spec = {"net": {"class_path": net_cfg.class_path, "init_args": dict(net_cfg.init_args)}}
    return cli.model, cli.datamodule, spec


def load_trained(config: str, ckpt_path: str):
    from nets.checkpoints import read_checkpoint

    model, dm, spec = build_from_config(config)
    ckpt = read_checkpoint(ckpt_path, "--ckpt_path")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["compact", "nir"], default="compact")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    a = p.parse_args(argv)
    try:
        import os
        if os.path.exists(a.out) and not a.force:
            raise UserError(f"{a.out} already exists; choose another --out or pass --force")
        model, dm, spec = load_trained(a.config, a.ckpt_path)
        if a.format == "compact":
            from nets.compact import export_compact
            r = export_compact(model.model, a.out, spec)
            print(f"wrote {a.out}: {r['compact_bytes']:,} bytes vs {r['dense_fp32_bytes']:,} dense fp32 "
                  f"({r['dense_fp32_bytes'] / r['compact_bytes']:.1f}x smaller); "
                  f"{r['nonzero_weights']:,} non-zero weights, {r['stored_weights']:,} stored entries")
        else:
            from nets.nir_export import export_nir
            r = export_nir(model.model, a.out, input_shape=tuple(dm.input_shape))
            print(f"wrote {a.out}: {r['bytes']:,} bytes, {r['nodes']} NIR nodes")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
