"""The pruning methods' registry: what the pipeline file names a method (``pruning: [{name: hydra, ...}]``), the
label and color the report gives it, and the callback class that runs it. A method registers itself as its callback
class is defined (``callbacks.pruning.PruningSchedule``); the registry itself is plain Python."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    color: str = "tab:gray"
    callback: str | None = None  # the class path of its schedule


METHODS: dict[str, Method] = {}
DENSE = Method("dense", "dense", "black")


def register(name: str, label: str, color: str = "tab:gray", callback: str | None = None) -> Method:
    METHODS[name] = Method(name, label, color, callback)
    return METHODS[name]


def method(name: str | None) -> Method:
    """The registered method of that name; None is the dense network; a name nobody registered stands for itself."""
    if name is None:
        return DENSE
    return METHODS.get(name) or Method(name, name)


def color_of(label: str | None) -> str:
    """The color of the method the report labels ``label`` (gray for one nobody registered)."""
    return next((m.color for m in (DENSE, *METHODS.values()) if m.label == label), "tab:gray")
