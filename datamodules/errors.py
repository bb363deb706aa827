"""Bad data (sizes, splits, missing files): one clear message instead of a traceback, as ``srsnn.errors.UserError``
is for the rest (``train.py`` shows both); defined here so that the data layer knows nothing of the networks."""


class DataError(ValueError):
    """Bad data or data options: the message names the problem and the fix."""


class DataNotFoundError(DataError):
    """The dataset is not on disk and could not be fetched."""
