"""Lightning callbacks: pruning schedules, attack evaluation, spike/synop energy logging."""

from .energy import SpikeEnergyMonitor
from .evaluation import AttackEvaluation
from .pruning import ChannelPruning, HarpPruning, HydraPruning, MagnitudePruning

__all__ = [
    "MagnitudePruning",
    "HydraPruning",
    "HarpPruning",
    "ChannelPruning",
    "AttackEvaluation",
    "SpikeEnergyMonitor",
]
