"""Resume checkpoints written beside the training loop, not in it.

The loop pays only for ``snapshot``: a copy of the state onto the CPU (on CUDA a device->host copy), taken
between epochs, so training may go on changing its tensors. ``CheckpointWriter`` serialises the copy, fsyncs
and renames it (``bench.atomic``) on a background thread, one write at a time: a new write first waits for
the previous one. A failed write is raised in the training thread, at the next checkpoint, epoch or join,
as a one-line ``BenchError`` naming the file.
"""
from __future__ import annotations

import io
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from bench import atomic
from bench.errors import BenchError, summary


def snapshot(obj: Any) -> Any:
    """``obj`` with every tensor copied to the CPU and every dict, list and tuple rebuilt: nothing in it is
    shared with the live state, so the loop can train on while it is written. Other values are immutable
    (numbers, strings, None) and are kept as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


def to_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` into memory."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class CheckpointWriter:
    """Writes snapshots to ``path`` on a background thread; at most one write in flight.

    Use as a context manager: leaving it joins the write in flight, and raises the write's error unless
    another exception is already on its way out (that one is the cell's error then).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: Any) -> None:
        """Write ``state``, a ``snapshot``, in the background, after the previous write has finished."""
        self.join()
        self._thread = threading.Thread(target=self._write, args=(state,), name=f"checkpoint {self.path}", daemon=True)
        self._thread.start()

    def _write(self, state: Any) -> None:
        try:
            atomic.write_bytes(self.path, to_bytes(state))
        except BaseException as exc:  # raised in the training thread by join or check
            self._error = exc

    def check(self) -> None:
        """Raise the error of a write that has already failed; never waits."""
        if self._thread is not None and not self._thread.is_alive():
            self.join()

    def join(self) -> None:
        """Wait for the write in flight; raise its error as a one-line ``BenchError``."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            exc, self._error = self._error, None
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else summary(exc)
            raise BenchError(f"{self.path}: writing the resume checkpoint failed ({reason})") from exc

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.join()
            return
        try:
            self.join()
        except BenchError:
            pass  # the exception already leaving the cell is the one reported
