"""The errors that stop a run with a message saying what to do.

A busy workdir, a run that keeps diverging, a checkpoint that cannot be
written, a data folder without a usable image, a config value out of range:
none of these is a bug, and a traceback would only hide the one line that
matters. Entry points print a `RunError`'s or `ConfigError`'s message alone
(see experiments/cli.py).
"""


class RunError(Exception):
  """A run cannot go on; the message names the cause and the remedy."""


class ConfigError(ValueError):
  """A config value (or an option of a command) that is not allowed."""
