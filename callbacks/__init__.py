"""Lightning callbacks: pruning schedules, attack evaluation, spike/synop energy logging."""

from .energy import SpikeEnergyMonitor
from .evaluation import AttackEvaluation
from .pruning import *  # noqa: F403 - every pruning method of callbacks/pruning/ (callbacks.HydraPruning, ...)
from .pruning import __all__ as _pruning

__all__ = ["AttackEvaluation", "SpikeEnergyMonitor", *_pruning]
