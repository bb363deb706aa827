"""Entry point: ``python train.py {fit,validate,test} --config conf/<dataset>/<stage>.yaml``.

A thin LightningCLI: model and data are chosen by ``class_path`` in the YAML (any LightningModule /
LightningDataModule, yours included). Trainer defaults: ``devices: 1``, ``inference_mode: false`` (attacks in
validation/test need gradients), the seed fixed, the resolved config saved next to every run, and every fit keeps
``last.ckpt`` (a ``ModelCheckpoint(save_last=True, save_top_k=1)`` goes first in ``trainer.callbacks`` unless one
there saves last already or ``trainer.enable_checkpointing`` is false; ``--print_config`` shows it).
Bad input raises ``UserError``, printed as one line without a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

from jsonargparse import ArgumentError, Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lightning_modules.loading import link_data_arguments, plain_numbers
from srsnn.errors import UserError
from srsnn.io.checkpoints import check_kind, read_checkpoint, resolve_checkpoint, run_folder_of
from srsnn.io.dotted import import_dotted
from srsnn_cli.options import (
    EvaluationOptions,
    apply_evaluation_options,
    integer_counts,
    keep_last_checkpoint,
    refuse_ambiguous_callback_options,
)

warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")


class SafeSaveConfig(SaveConfigCallback):
    """Saves the resolved config next to the run; refuses (never overwrites) when one is already there."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        existing = os.path.join(trainer.log_dir or trainer.default_root_dir, self.config_filename)
        if getattr(pl_module, "restoring_checkpoint", False) and os.path.isfile(existing):
            return  # a resumed fit continues its own folder: the config saved at its start stays
        try:
            super().setup(trainer, pl_module, stage)
        except RuntimeError as err:
            if "to NOT exist" not in str(err):
                raise
            where = trainer.log_dir or trainer.default_root_dir
            raise UserError(
                f"{os.path.join(where, self.config_filename)} already exists: this folder holds a "
                "previous run, which is kept. Use a logger (a new version folder per run) or another "
                "--trainer.default_root_dir."
            ) from None


class _NoTips(logging.Filter):
    """Lightning's advertising tips are nothing a user of this repo can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())


def _version_of(ckpt_path: str, root: str) -> int | None:
    """``K`` when ``ckpt_path`` is ``<root>/lightning_logs/version_K/checkpoints/*.ckpt`` (a resume continues there)."""
    parts = os.path.normpath(os.path.abspath(ckpt_path)).split(os.sep)
    if (
        len(parts) >= 4
        and parts[-2] == "checkpoints"
        and parts[-3].startswith("version_")
        and os.sep.join(parts[:-3]) == os.path.normpath(os.path.abspath(os.path.join(root, "lightning_logs")))
    ):
        try:
            return int(parts[-3][len("version_") :])
        except ValueError:
            return None
    return None


def _kind_of(class_path) -> str | None:
    """``kind`` ("ann" / "snn") of a LightningModule class named by its class path (None if it does not say)."""
    try:
        return getattr(import_dotted(class_path), "kind", None)
    except (ImportError, AttributeError, ValueError):
        return None  # the model's own instantiation reports it


class CLI(LightningCLI):
    """Lightning's conventions, plus: checkpoints may be given as run folders (``<folder>``, ``<folder>/best``,
    ``<folder>/last``); logs go under ``--trainer.default_root_dir`` (CSV, ``lightning_logs/version_K`` for fit,
    ``test/version_K`` / ``validate/version_K`` for evaluations, so they never take the version numbers of fit
    runs); a resumed fit continues its own version folder (``best.ckpt`` / ``last.ckpt`` stay right); every run
    ends with one line naming its folder, checkpoints and results; SIGTERM or Ctrl-C during fit saves
    ``interrupted.ckpt`` and exits 1."""

    def __init__(self, *a, args=None, **kw):
        self._args = sys.argv[1:] if args is None else list(args) if isinstance(args, (list, tuple)) else []
        # the run folder given by the caller (flag, or an in-process call's dict), not only by a --config file
        self._root_given = any(x.split("=")[0] == "--trainer.default_root_dir" for x in self._args) or (
            isinstance(args, (dict, Namespace)) and "default_root_dir" in str(args)
        )
        super().__init__(*a, args=args, **kw)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(EvaluationOptions, "evaluation", help=EvaluationOptions.__doc__.split("\n\n")[0])

    def parse_arguments(self, parser, args) -> None:
        """Lightning's parsing, then the network's data-dependent arguments from the datamodule
        (``link_data_arguments``); ``--print_config`` prints the config with them filled in."""
        printing = (
            []
            if isinstance(args, (dict, Namespace))
            else [a for a in self._args if a == "--print_config" or a.startswith("--print_config=")]
        )
        if printing:  # printed here, after the linking, instead of inside the parser
            args = [a for a in self._args if a not in printing]
        self.config = plain_numbers(
            parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)
        )
        sub = self.config.get("subcommand")
        if sub is not None:
            link_data_arguments(self.config[sub])
            refuse_ambiguous_callback_options(self.config[sub], self._args)
            apply_evaluation_options(self.config[sub])
            if sub == "fit":  # an evaluation writes no checkpoint (instantiate_trainer drops them)
                keep_last_checkpoint(self.config[sub].trainer)
            self._check_ckpt_path(self.config[sub])
        if printing:
            flags = printing[-1].partition("=")[2].split(",")
            sys.stdout.write(
                self._parser(sub).dump(
                    self.config[sub] if sub else self.config,
                    skip_none="skip_null" in flags,
                    skip_default="skip_default" in flags,
                )
            )
            sys.exit(0)

    def _check_ckpt_path(self, cfg: Namespace) -> None:
        """``--ckpt_path`` may name a run folder; the file must be a checkpoint this repo reads safely (one clear
        error otherwise, before Lightning reads its hyperparameters into the config)."""
        self._config_model = cfg.get("model.class_path")  # the config's own, before the checkpoint's replaces it
        if cfg.get("ckpt_path"):
            cfg.ckpt_path = resolve_checkpoint(cfg.ckpt_path, "--ckpt_path")
            if os.path.isfile(cfg.ckpt_path):
                ckpt = read_checkpoint(cfg.ckpt_path, "--ckpt_path")
                if "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
                    native = str(cfg.get("model.class_path") or "").endswith("NativeSNN")
                    what, key = ("your SNN", "weights") if native else ("an ANN", "init_from")
                    raise UserError(
                        f"--ckpt_path {cfg.ckpt_path} holds weights only (a state dict), not a checkpoint written by "
                        f"train.py fit; to start {what} from these weights pass --model.init_args.{key} "
                        f"{cfg.ckpt_path} (without --ckpt_path)"
                    )

    def _check_checkpoint_kind(self, cfg: Namespace) -> None:
        """Lightning takes the checkpoint's own module class from its hyperparameters: an ANN checkpoint under an
        SNN config (or the reverse) would silently run the other kind."""
        ours, theirs = getattr(self, "_config_model", None), cfg.get("model.class_path")
        if ours and theirs and ours != theirs:
            kind = _kind_of(theirs)
            check_kind(
                kind,
                _kind_of(ours),
                f"--ckpt_path {cfg.ckpt_path} ({theirs})",
                f"the config builds {ours}: pass the config it was trained with (e.g. conf/<dataset>/{kind}.yaml, "
                "or its run folder's config.yaml)",
            )

    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        cfg = self.config[sub]
        self._check_checkpoint_kind(cfg)
        init = cfg.model.get("init_args") if cfg.get("model") is not None else None
        for key in ("ann_checkpoint", "init_from"):
            if init is not None and init.get(key):
                init[key] = resolve_checkpoint(init[key], f"model.init_args.{key}")
        if sub in ("validate", "test") and cfg.get("ckpt_path") and not self._root_given:
            # an evaluation lands in its checkpoint's run (runs/<run>/test/version_K), not in the run folder its
            # --config names (which may be another run's: the same config serves many datasets and networks)
            cfg.trainer.default_root_dir = run_folder_of(cfg.ckpt_path)
        root = cfg.trainer.get("default_root_dir") or os.getcwd()
        if cfg.trainer.get("logger") in (None, True):
            version = _version_of(cfg.ckpt_path, root) if sub == "fit" and cfg.get("ckpt_path") else None
            cfg.trainer.logger = Namespace(
                class_path="callbacks.csv_logger.ResumableCSVLogger",
                init_args=Namespace(save_dir=root, name="lightning_logs" if sub == "fit" else sub, version=version),
            )

    def instantiate_trainer(self, **kwargs):
        from callbacks.interrupt import SaveOnInterrupt

        init = self.config_init[self.subcommand]["trainer"]
        for key in integer_counts(self._args):  # after instantiate_classes, which casts 1 to 1.0 again
            if init.get(key) == 1.0:
                init[key] = 1
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(SaveOnInterrupt())
        if self.subcommand != "fit":  # an evaluation writes no checkpoint (and restoring their state only warns)
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
            warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided")
        return trainer

    def _before(self) -> None:
        # a checkpoint will be restored: the module need not build its weights (e.g. convert an ANN) at setup
        if self.config_init[self.subcommand].get("ckpt_path"):
            self.model.restoring_checkpoint = True

    before_fit = before_validate = before_test = _before

    def _after(self) -> None:
        t = self.trainer
        folder = t.log_dir or t.default_root_dir  # a broadcast under DDP: every rank must ask
        if not t.is_global_zero:
            return
        parts = [f"run folder {folder}"]
        for cb in t.checkpoint_callbacks if self.subcommand == "fit" else []:  # evaluations write no checkpoint
            paths = [
                getattr(cb, "last_model_path", "") if getattr(cb, "save_last", False) else "",
                getattr(cb, "best_model_path", "") if getattr(cb, "monitor", None) else "",
            ]
            for path in paths:
                if path and os.path.isfile(path) and not any(path in p for p in parts):
                    parts.append(f"{os.path.basename(path)}: {path}")
        results = os.path.join(folder, "evaluation")
        if os.path.isdir(results):
            parts.append(f"results: {results}")
        print("done: " + "; ".join(parts), flush=True)

    after_fit = after_validate = after_test = _after


def main(args=None) -> None:
    try:
        CLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            # one device unless asked (Lightning's "auto" would spread over every GPU); attacks need gradients
            trainer_defaults={"inference_mode": False, "devices": 1},
            save_config_callback=SafeSaveConfig,
            parser_kwargs={"exit_on_error": False},  # the reason first (below), not 50 lines of usage
            args=args,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        _exit(2)
    except (ValueError, ArgumentError) as err:
        message = _config_error(err)
        if message is None:
            raise
        print(
            f"error: {message}\n(every option: python train.py {{fit,validate,test}} --help; the resolved config: "
            "add --print_config)",
            file=sys.stderr,
        )
        sys.exit(2)
    if args is None:  # the command line (not an in-process call): a DDP worker's teardown may abort (see _exit)
        _exit(0)


def _exit(code: int) -> None:
    """Exit; under DDP without running the interpreter's teardown, where gloo's threads may abort the process
    (exit status -6 instead of ``code``) when destroyed mid-flight."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _config_error(err: Exception) -> str | None:
    """jsonargparse's report reduced to one line: each refused value with its full key and the class that refused
    it. A subclass option comes as a union mismatch listing every alternative class (and ``NoneType``); the
    alternatives that understood the key are kept, the rest only when none did."""
    text = str(err)
    if "Unexpected config" in text:  # jsonargparse's words for a --config file that is not a mapping
        return (
            "invalid configuration: a --config file must be a YAML mapping of options (key: value, e.g. "
            f"conf/digits/ann.yaml); this one holds {text.partition('Unexpected config:')[2].strip()[:80]!r}"
        )
    if isinstance(err, ValueError) and "Does not validate against any of the Union subtypes" not in text:
        return None
    stack: list[tuple[int, str, str]] = []  # (indent, "key" or "class", name) of the lines above
    found: list[tuple[int, str, str]] = []  # (depth: keys above it, where, reason)
    given: dict[str, str] = {}  # where -> the value refused there (an Optional's report leaves it out of the reason)
    for raw in text.splitlines():
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip(" -"))
        line = line[2:] if line.startswith("- ") else line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = re.match(r'Parser key "([^"]+)"', line) or re.match(r"[Kk]ey '([^']+)'", line)
        cls = re.match(r"Problem with given class_path '([^']+)'", line)
        if key or cls:
            stack.append((indent, "key" if key else "class", (key or cls).group(1)))
            continue
        keys = [name for _, what, name in stack if what == "key"]
        classes = [name for _, what, name in stack if what == "class"]
        where = ".".join(keys) + (f" ({classes[-1]})" if classes else "")
        if line.startswith("Given value:"):
            given.setdefault(where, line.partition(":")[2].strip())
        skip = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")
        if line and not line.startswith(skip):
            found.append((len(keys), where, line.rstrip(":")))
    deep = [f for f in found if f[0] > 1]  # the alternatives that understood the key (a key inside the class)
    reasons = [
        (f"{w}: {r}" if w else r)
        + (f" (given {given[w]})" if 0 < len(given.get(w, "")) <= 40 and "value" not in r.lower() else "")
        for _, w, r in (deep or found)
    ]
    reasons = list(dict.fromkeys(reasons)) or ([text.splitlines()[0]] if text else [])
    return "invalid configuration: " + "; ".join(reasons) if reasons else None


if __name__ == "__main__":
    main()
