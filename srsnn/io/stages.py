"""A pipeline stage's identity (what its result depends on: command, config contents, code, upstream stages) and
the run folder's lock (one pipeline per ``run_dir``)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shlex
import sys
import time

import yaml
from filelock import FileLock, Timeout

from srsnn.errors import PipelineError

# stages run in ROOT (the clone, or site-packages when installed): config paths are relative to it
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


CODE = (
    "srsnn_cli",
    "srsnn/errors.py",
    "srsnn/devices.py",
    "srsnn/modes.py",
    "srsnn/ann",
    "srsnn/snn",
    "srsnn/pruning",
    "srsnn/robustness",
    "srsnn/export",
    "srsnn/io",
    "lightning_modules",
    "callbacks",
    "datamodules",
)  # what a stage's result depends on


WEIGHTS = (".pt", ".pth", ".safetensors")  # files a stage reads weights from (checkpoints come from upstream stages)


def code_version(root: str = ROOT) -> str:
    """A hash of the package's Python sources (works in a clone and in an installed copy alike)."""
    h = hashlib.sha256()
    for entry in CODE:
        path = os.path.join(root, entry)
        files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "**", "*.py"), recursive=True))
        for f in files:
            h.update(os.path.relpath(f, root).encode() + b"\0" + open(f, "rb").read() + b"\0")
    return h.hexdigest()[:16]


def _config_files(args: list[str]) -> list[str]:
    return [args[k + 1] for k, a in enumerate(args[:-1]) if a == "--config"]


def _with_includes(path: str, seen: tuple = ()) -> list[str]:
    """A config file and those it includes (a ``config: <file>`` key, relative to the including file), recursively."""
    if path in seen:  # an include cycle: train.py reports it; the identity need not loop
        return []
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return [path]
    include = data.get("config") if isinstance(data, dict) else None
    more = (
        _with_includes(os.path.join(os.path.dirname(path), include), seen + (path,)) if isinstance(include, str) else []
    )
    return [path] + more


def identity(command: list[str], upstream: dict[str, str], code: str) -> dict[str, str]:
    """What a stage's result depends on: its command (config files by their contents, checkpoints by the upstream
    stages' identities, its own folder left out: a run folder moved with its configs stays valid), the code."""

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    configs = []
    for path in _config_files(command):
        for f in _with_includes(os.path.join(ROOT, path)):  # stages run in ROOT (an absolute path stays as it is)
            configs.append(digest(open(f).read()) if os.path.isfile(f) else "missing")
    for k, a in enumerate(command):  # a weights file the command names (an snnTorch net's): by its contents too
        if k and command[k - 1] != "--config" and a.endswith(WEIGHTS):
            f = os.path.join(ROOT, a)
            configs.append(hashlib.sha256(open(f, "rb").read()).hexdigest()[:16] if os.path.isfile(f) else "missing")
    generic = [("<config>" if k and command[k - 1] == "--config" else a) for k, a in enumerate(command)]
    return {
        "command": digest(shlex.join(generic)),
        "configs": digest(json.dumps(sorted(configs))),
        "code": code,
        "upstream": digest(json.dumps(upstream, sort_keys=True)),
    }


def _changed(old: dict, new: dict) -> str:
    if "code" not in old:
        return "completed by an older version of pipeline.py"
    what = {
        "command": "its command changed",
        "configs": "its config file changed",
        "code": "the code changed",
        "upstream": "a stage it takes a checkpoint from was re-run",
    }
    return ", ".join(v for k, v in what.items() if old.get(k) != new.get(k)) or "unknown"


def _read_identity(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # a DONE file of an older pipeline (the command line only)
        return {"command": "older pipeline version"}


LOCK, OWNER = "pipeline.lock", "pipeline.owner.json"


@contextlib.contextmanager
def run_dir_lock(root: str):
    """One pipeline per run folder: an OS file lock on ``<run_dir>/pipeline.lock`` (``filelock``; the system frees it
    when its process dies, however it dies), and ``pipeline.owner.json`` beside it naming the owner for the message
    that refuses a second pipeline (its stages would share version folders, checkpoints and the report)."""
    lock, owner_path = FileLock(os.path.join(root, LOCK)), os.path.join(root, OWNER)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            with open(owner_path) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            owner = {}
        raise PipelineError(
            f"another pipeline is running in {root} (pid {owner.get('pid', '?')}, started "
            f"{owner.get('started', '?')}: {owner.get('command', '?')}); wait for it to finish or use another run_dir"
        ) from None
    try:
        if os.path.exists(owner_path):
            print("note: taking over the run folder of a pipeline that ended without releasing it", flush=True)
        with open(owner_path, "w") as f:
            json.dump(
                {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": shlex.join(sys.argv)},
                f,
            )
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(owner_path)
        lock.release()
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock.lock_file)
