"""What both evaluation callbacks share: the test subset and this rank's shard of it, sums and gathers over DDP
ranks, and writing a results file (rank 0 writes; every rank must call)."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.utilities.distributed import gather_all_tensors

from srsnn.errors import UserError
from srsnn.robustness.results import RECORD_VERSION


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a tensor of counts over DDP ranks (torchmetrics' gather; identity on one process). The
    tensor must be on the ranks' device: NCCL (multi-GPU) accepts accelerator tensors only."""
    values = values.double()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.stack(gather_all_tensors(values)).sum(0)
    return values


def results_dir(trainer, output_dir: Optional[str]) -> str:
    path = output_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, "evaluation")
    if trainer.is_global_zero:
        os.makedirs(path, exist_ok=True)
    return path


def write_results(trainer, output_dir: Optional[str], stem: str, results, markdown: str, plots: dict) -> None:
    """``<stem>.json`` (``results.write``), ``<stem>.md`` and the other files (``{filename: fn(path)}``) into the
    results folder.

    Call on every rank: ``trainer.log_dir`` is a broadcast under DDP (a rank-0-only call deadlocks); rank 0 writes."""
    out = results_dir(trainer, output_dir)
    if not trainer.is_global_zero:
        return
    path = os.path.join(out, f"{stem}.json")
    if isinstance(results, dict):  # energy.json: a plain record, versioned like the typed ones
        with open(path, "w") as f:
            json.dump({"schema_version": RECORD_VERSION, **results}, f, indent=2)
    else:
        results.write(path, indent=2)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(markdown)
    for name, fn in plots.items():
        fn(os.path.join(out, name))
    rank_zero_info(f"wrote {out}/{stem}.json, {stem}.md, " + ", ".join(plots))


def test_subset(trainer, num_samples: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The first ``num_samples`` samples of the datamodule's ``test_dataloader()`` (0 = all; ``split="val"``: of
    ``val_dataloader()``), in its order, and this rank's exact, non-overlapping shard of them:
    ``(x, y, global indices)``. Works with any LightningDataModule."""
    x, y = first_samples(trainer.datamodule, num_samples, split)
    idx = list(range(len(y)))[trainer.global_rank :: trainer.world_size]
    return x[idx], y[idx], idx


def first_samples(dm, num_samples: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_samples`` samples (0 = all) of the datamodule's ``<split>_dataloader()``, in its order."""
    name = f"{split}_dataloader"
    if dm is None or not callable(getattr(dm, name, None)):
        raise UserError(
            f"the evaluation callbacks need a LightningDataModule with a {name}() "
            "(pass --data ...; a bare dataloader has no fixed test set to evaluate)"
        )
    loader = getattr(dm, name)()
    if isinstance(getattr(loader, "sampler", None), torch.utils.data.RandomSampler):
        raise UserError(
            f"{type(dm).__name__}.{name}() shuffles; the evaluation needs a fixed order (use shuffle=False for it)"
        )
    xs, ys, n = [], [], 0
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise UserError(f"{type(dm).__name__}.{name}() must yield (images, labels) batches")
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
        n += len(batch[1])
        if num_samples and n >= num_samples:
            break
    if not xs:
        raise UserError(f"{type(dm).__name__}.{name}() is empty")
    x, y = torch.cat(xs), torch.cat(ys).long()
    n = min(num_samples, len(y)) if num_samples else len(y)
    return x[:n], y[:n]


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` on one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]
