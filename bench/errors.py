"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line, for a BenchError that quotes it."""
    return " ".join(str(exc).split())


class BenchError(ValueError):
    """A user-facing problem with input (a file, a config key, a run directory): the message names it."""
