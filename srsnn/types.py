"""Option types that ``train.py``'s parser checks (and ``--help`` shows) beyond jsonargparse's own ``PositiveInt``,
``NonNegativeFloat``, ``ClosedUnitInterval`` ...; the parser hands plain numbers on
(``lightning_modules.loading.plain_numbers``).
"""

from __future__ import annotations

from jsonargparse.typing import restricted_number_type

FractionBelowOne = restricted_number_type(
    "FractionBelowOne", float, [(">=", 0), ("<", 1)], join="and", docstring="a fraction in [0, 1)"
)  # a sparsity (0.9 = 90 % of the weights removed), a held-out split
Percentile = restricted_number_type(
    "Percentile", float, [(">", 0), ("<=", 100)], join="and", docstring="a percentile in (0, 100]"
)
