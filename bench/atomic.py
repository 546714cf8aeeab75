"""Atomic file writes: every artefact appears complete or not at all, so a killed run never leaves a half file."""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

# Fault injection for the kill-point tests: "NAME:N:before|after" SIGKILLs this process at the N-th write of a
# file called NAME, before or after its rename. Unset (always, outside tests) it costs one dictionary lookup.
_KILL_AT = os.environ.get("SALT_BENCH_KILL_AT")
_writes: dict[str, int] = {}


def _maybe_killed(name: str, when: str) -> None:
    if _KILL_AT is None:
        return
    target, n, at = _KILL_AT.split(":")
    if name == target and at == when:
        if when == "before":
            _writes[name] = _writes.get(name, 0) + 1
        if _writes.get(name, 0) == int(n):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")  # see _TEMP
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the real file gets the usual permissions
        _maybe_killed(path.name, "before")
        os.replace(tmp, path)
        _maybe_killed(path.name, "after")
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write or fsync (disk full) names the file it was writing
        raise
    return path


def create_new(path: str | os.PathLike, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; returns whether this call created it. The file appears
    complete or not at all: it is written under a temporary name and hard-linked into place (a link, unlike a
    rename, fails when the name exists), so a kill never leaves an empty or half-written ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(path, buf.getvalue())


# The name of atomic_write's temporary file, and of nothing else: ".<name>.<pid>.<mkstemp's 8 random characters>.tmp"
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,8})\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that ``atomic_write`` made in ``folder`` (not below it) for writers that were
    killed: regular files named exactly as it names them, whose pid runs no process here. Anything else (a
    user's ``.notes.tmp``, a folder named ``x.tmp``, the file of a live writer) is left alone."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not pid_alive(int(m.group("pid"))):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (a stale temp or claim is one whose writer is gone).
    A zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux) or gone meanwhile: what kill said
        return True


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
