"""The one exception family shown to users as one ``error:`` line instead of a traceback.

Library code raises; only the entry points (``srsnn_cli``) turn a ``UserError`` into that line and exit code 2.
"""


class UserError(ValueError):
    """Bad input (config, checkpoint, data, pipeline file): the message names the problem and the fix."""


class DataError(UserError):
    """Bad data or data options (sizes, splits, missing files)."""


class DataNotFoundError(DataError):
    """The dataset is not on disk and could not be fetched."""


class ConversionError(UserError):
    """A conversion step failed; the message names the step."""


class PipelineError(UserError):
    """A pipeline file or a pipeline stage's problem."""
