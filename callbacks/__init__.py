"""Lightning callbacks: pruning schedules, attack evaluation, spike/synop energy logging."""
from .pruning import ChannelPruning, HarpPruning, HydraPruning, MagnitudePruning

__all__ = ["MagnitudePruning", "HydraPruning", "HarpPruning", "ChannelPruning"]
