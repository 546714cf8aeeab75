"""The one guard around every read of a run-directory file: whatever a truncated, empty, garbage or foreign file
makes a parser raise becomes one line naming the file, so no command prints a traceback for a broken file."""
from __future__ import annotations

import json
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from bench.errors import BenchError, one_line

#: what numpy, pandas, json, yaml and torch raise for a file that is not what it should be (pandas' parser errors
#: are ValueErrors; torch reports a broken archive as a RuntimeError, a broken pickle as an UnpicklingError)
READ_ERRORS = (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, EOFError, RuntimeError,
               zipfile.BadZipFile, pickle.UnpicklingError, yaml.YAMLError)


@contextmanager
def reading(path: Path, what: str, remedy: str = "") -> Iterator[None]:
    """Run a read of ``path`` (``what`` it should hold); a failure is ``BenchError("<path>: unreadable <what> ...")``,
    followed by ``remedy`` when there is one."""
    if not Path(path).is_file():
        raise BenchError(f"{path}: missing {what}; the run directory is incomplete")
    try:
        yield
    except BenchError:
        raise
    except READ_ERRORS as exc:
        detail = one_line(exc)[:200]
        raise BenchError(f"{path}: unreadable {what} ({type(exc).__name__}{': ' + detail if detail else ''})"
                         + (f"; {remedy}" if remedy else "")) from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object."""
    with reading(path, what):
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise BenchError(f"{path}: not a {what} (a JSON {type(value).__name__}, expected an object)")
    return value


def require(path: Path, what: str, found: Any, needed: tuple[str, ...] | list[str]) -> None:
    """Refuse a file whose keys or columns ``found`` lack any of ``needed``: it is not (or no longer) such a file."""
    missing = [k for k in needed if k not in found]
    if missing:
        raise BenchError(f"{path}: not a {what} (no {', '.join(repr(m) for m in missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''})")
