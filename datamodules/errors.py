"""The data layer's errors: the ``srsnn.errors`` family (the data layer knows nothing of the networks)."""

from srsnn.errors import DataError, DataNotFoundError

__all__ = ["DataError", "DataNotFoundError"]
