"""The one exception family shown to users as a clear message instead of a traceback (see ``train.py``)."""


class UserError(ValueError):
    """Bad input (config, checkpoint, data): the message names the problem and the fix."""
