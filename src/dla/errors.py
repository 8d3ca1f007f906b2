"""User-facing errors.

Every mistake a user can make (a bad config value, a missing dataset, a foreign checkpoint) raises a
`DlaError` whose message names the bad value and the fix. The CLI prints it on one line and exits 2;
anything else that escapes is a bug and keeps its traceback.
"""


class DlaError(Exception):
    """A user mistake, explained in one line."""


class ConfigError(DlaError):
    """An experiment config or override is malformed, unknown, mistyped or out of range."""


class DataError(DlaError):
    """A dataset is missing, corrupt or in an unexpected layout."""


class CheckpointError(DlaError):
    """A checkpoint is missing, truncated, foreign or unsafe to load."""


class RunDirError(DlaError):
    """An output or run directory cannot be used."""
