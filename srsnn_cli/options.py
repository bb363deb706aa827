"""``train.py``'s own options and the config rewrites they make before the classes are built: integer batch
counts, ``last.ckpt`` always kept, ``--evaluation.*`` onto the evaluation callback, ambiguous callback options
refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Union

from jsonargparse import Namespace
from jsonargparse.typing import NonNegativeInt, PositiveInt

from srsnn.errors import UserError
from srsnn.io.dotted import import_dotted
from srsnn.robustness.budget import Preset

# Lightning types these ``Union[float, int]``, so the CLI reads ``1`` as 1.0 (= 100 % of the batches); a user typing
# ``--trainer.limit_val_batches 1`` means one batch, as ``Trainer(limit_val_batches=1)`` does
_COUNTS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "val_check_interval",
)


def integer_counts(args: list[str]) -> set[str]:
    """The trainer count options given as an integer literal on the command line."""
    found = set()
    for k, tok in enumerate(args):
        for key in _COUNTS:
            flag = f"--trainer.{key}"
            value = (
                tok[len(flag) + 1 :]
                if tok.startswith(flag + "=")
                else (args[k + 1] if tok == flag and k + 1 < len(args) else None)
            )
            if value is not None:
                (found.add if re.fullmatch(r"\d+", value.strip()) else found.discard)(key)
    return found


_LAST = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True, "save_top_k": 1}}


def keep_last_checkpoint(trainer: Namespace) -> None:
    """Puts ``_LAST`` first in ``trainer.callbacks`` unless a callback there saves ``last.ckpt`` already: resume,
    the pipeline and ``--ckpt_path <run folder>`` read it, so no stage config has to spell it."""
    if trainer.get("enable_checkpointing") is False:
        return
    callbacks = trainer.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
    if any(
        str(c.get("class_path", "")).endswith("ModelCheckpoint") and c.get("init_args.save_last")
        for c in callbacks
        if isinstance(c, Namespace)
    ):
        return
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback

    parser = ArgumentParser()  # the callback with every default filled in, as the config's own entries are
    parser.add_argument("--cb", type=Callback)
    trainer.callbacks = [parser.parse_object({"cb": _LAST}).cb, *callbacks]


@dataclass
class EvaluationOptions:
    """Shortcuts to the config's ``callbacks.AttackEvaluation`` (unset: the config's value), e.g.
    ``--evaluation.num_samples 50 --evaluation.adaptive quick``.

    Args:
        num_samples: the first N test images (0 = all).
        batch_size: the attack batch size.
        epsilons: budgets in pixel space, e.g. ``[0.1, 0.2]`` or ``["2/255", "8/255"]``.
        adaptive: a preset: ``thorough`` (the default), ``strong``, ``fast`` (upper bounds), ``quick`` (smoke runs:
            upper bounds) or ``paper`` (the protocol only), or one with some keys changed, e.g.
            ``'{preset: strong, verify_rounds: 3}'`` (``callbacks.AttackEvaluation``).
        output_dir: where the results go (default ``<log_dir>/evaluation``).
    """

    num_samples: Optional[NonNegativeInt] = None
    batch_size: Optional[PositiveInt] = None
    epsilons: Optional[list[Union[float, str]]] = None
    adaptive: Optional[Union[Preset, dict[str, Any]]] = None
    output_dir: Optional[str] = None


def apply_evaluation_options(cfg: Namespace) -> None:
    """``--evaluation.*`` onto the ``AttackEvaluation`` entry of ``trainer.callbacks``; an option given for a config
    without one is an error, never silently dropped."""
    opts = cfg.get("evaluation")
    given = {k: v for k, v in (vars(opts).items() if isinstance(opts, Namespace) else []) if v is not None}
    if not given:
        return
    callbacks = cfg.trainer.get("callbacks") or []
    found = [
        c
        for c in (callbacks if isinstance(callbacks, list) else [callbacks])
        if isinstance(c, Namespace) and str(c.get("class_path", "")).endswith("AttackEvaluation")
    ]
    if not found:
        raise UserError(
            f"--evaluation.{next(iter(given))}: this config runs no callbacks.AttackEvaluation (add it to "
            "trainer.callbacks, as conf/<dataset>/ann.yaml does)"
        )
    for cb in found:
        if cb.get("init_args") is None:
            cb.init_args = Namespace()
        for key, value in given.items():  # plain values: jsonargparse's PositiveInt etc. do not dump to YAML
            cb.init_args[key] = (
                int(value)
                if isinstance(value, int)
                else list(value)
                if isinstance(value, list)
                else dict(value)
                if isinstance(value, dict)
                else str(value)
            )


def _callback_options(args: list[str]) -> set[str]:
    """The keys of ``--trainer.callbacks.init_args.KEY`` options on the command line."""
    prefix = "--trainer.callbacks.init_args."
    return {a[len(prefix) :].partition("=")[0] for a in args if a.startswith(prefix)}


def refuse_ambiguous_callback_options(cfg: Namespace, args: list[str]) -> None:
    """jsonargparse applies ``--trainer.callbacks.init_args.KEY`` to the *last* callback; when another callback of
    the config takes the same KEY too (``num_samples``: the evaluation and the energy monitor) the user likely meant
    that one, and it would silently stay unchanged."""

    import inspect

    keys = _callback_options(args)
    callbacks = cfg.trainer.get("callbacks") or []
    callbacks = [c for c in (callbacks if isinstance(callbacks, list) else [callbacks]) if isinstance(c, Namespace)]
    if not keys or len(callbacks) < 2:
        return
    for key in sorted(keys):
        takers = []
        for c in callbacks:
            try:
                params = inspect.signature(import_dotted(c.get("class_path", ""))).parameters
            except (ImportError, AttributeError, ValueError, TypeError):
                continue
            if key in params:
                takers.append(str(c.get("class_path")).rpartition(".")[2])
        if len(takers) > 1:
            hint = f"--evaluation.{key}" if key in EvaluationOptions.__dataclass_fields__ else "a config file"
            raise UserError(
                f"--trainer.callbacks.init_args.{key} changes only the last callback ({takers[-1]}), "
                f"but {', '.join(takers[:-1])} takes {key} too; use {hint} (or set it on the callback you "
                "mean in a YAML passed as a second --config)"
            )
