"""The errors tfseg's entry points report to a person as `error: <message>` (exit code 2).

A leaf module: it imports nothing from tfseg, so any module can raise these without importing the
modules that parse configs or read data (which is how import cycles started). Each message names the
bad setting and the fix.
"""


class ConfigError(ValueError):
    """A gin file, binding or run directory that cannot work; the message says the fix."""


class DataError(ValueError):
    """The data configuration cannot work; the message names the bad setting and the fix."""


class SplitUnavailableError(DataError):
    """The source has no such split (e.g. LSUN has no validation split). Fatal for "train" only."""


class RunDirError(RuntimeError):
    """The model_dir cannot be used for this run; the message names the reason and the fix."""
