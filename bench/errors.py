"""The one exception type the CLI turns into a one-line message and a non-zero exit, and the two ways an
exception's text is folded onto one line."""


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line, for a BenchError that quotes it."""
    return " ".join(str(exc).split())


def summary(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an exception: the reason recorded for a failed trial or cell."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


class BenchError(ValueError):
    """A user-facing problem with input (a file, a config key, a run directory): the message names it."""
