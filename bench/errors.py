"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class BenchError(ValueError):
    """A user-facing problem with input (a file, a config key, a run directory): the message names it."""
