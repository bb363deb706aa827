"""Export a trained (sparse) ANN or SNN for deployment.

    python export.py --config conf/digits/snn.yaml --ckpt_path <.ckpt> --out model.safetensors            # compact
    python export.py --config conf/digits/snn.yaml --ckpt_path <.ckpt> --out model.nir --format nir       # NIR graph
    python export.py --config <run folder>/config.yaml --ckpt_path <run folder> --out model.safetensors  # a run's own

The config is the one the checkpoint was trained with (it defines the architecture); the checkpoint is read
with ``weights_only=True``. ``compact`` writes values + uint8 relative indices (``srsnn.export.compact``); load it
back with ``srsnn.export.compact.load_compact(path)``, no Lightning needed.
"""

from __future__ import annotations

import argparse
import os
import sys

from srsnn.errors import UserError
from srsnn_cli import one_line_errors


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["compact", "nir"], default="compact")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    a = p.parse_args(argv)
    if os.path.exists(a.out) and not a.force:
        raise UserError(f"{a.out} already exists; choose another --out or pass --force")
    from lightning_modules.loading import load_trained
    from srsnn.io.checkpoints import resolve_checkpoint

    model, dm, spec = load_trained(a.config, resolve_checkpoint(a.ckpt_path, "--ckpt_path"))
    if a.format == "compact":
        from srsnn.export.compact import export_compact

        r = export_compact(model.model, a.out, spec)
        ratio = r["dense_fp32_bytes"] / r["compact_bytes"]
        print(
            f"wrote {a.out}: {r['compact_bytes']:,} bytes vs {r['dense_fp32_bytes']:,} dense fp32 "
            f"({f'{ratio:.1f}x smaller' if ratio >= 1 else f'{1 / ratio:.2f}x larger: too few zeros to pay for their indices'}); "  # noqa: E501
            f"{r['nonzero_weights']:,} non-zero weights, {r['stored_weights']:,} stored entries"
        )
    else:
        from srsnn.export.nir import export_nir

        r = export_nir(model.model, a.out, input_shape=tuple(dm.input_shape))
        print(f"wrote {a.out}: {r['bytes']:,} bytes, {r['nodes']} NIR nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
