"""Progress lines for a person watching ``salt-bench run`` or ``salt-bench tune``: work done of total, what runs
now, time elapsed and an estimate of the time left.

A run's progress is read from its run directory, so it is the same whichever process trains the cells: a cell is
done when it has ``metrics.json``, running while it has a ``claim``, and its epoch is in its ``progress.json``
(``CellProgress``). Nothing here is written to the run directory or enters a result.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from bench.rundir import Cell, CellProgress, RunDir

LINE_EVERY_S = 30.0  # a line at least this often while nothing finishes
POLL_S = 2.0  # how often the run directory is looked at
SHOWN_RUNNING = 4  # running cells named in one line


def say(text: str) -> None:
    """Print one line now, also into a log file or pipe, apart from any tqdm bar being drawn (tqdm's lock)."""
    from tqdm.auto import tqdm

    tqdm.write(text)
    sys.stdout.flush()


def duration(seconds: float) -> str:
    """``45 s``, ``3.1 min`` or ``2.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def eta(elapsed: float, done: float, total: float) -> str:
    """``; 3.1 min elapsed, about 4.2 min left`` at the rate so far; nothing about the time left before any work is
    done, or once all of it is."""
    left = f", about {duration(elapsed * (total - done) / done)} left" if 0 < done < total else ""
    return f"; {duration(elapsed)} elapsed{left}"


def trial_progress(k: int, n_trials: int | None, timeout: float | None, elapsed: float) -> str:
    """``[trial 3/10; 2.0 min elapsed, about 4.7 min left]`` after the ``k``-th trial a tune command added: the time
    left at the rate so far, never past ``timeout``; with a timeout alone, the trials have no total."""
    left = elapsed * (n_trials - k) / k if n_trials else None
    if timeout is not None:
        left = max(timeout - elapsed, 0.0) if left is None else min(left, max(timeout - elapsed, 0.0))
    return (f"[trial {k}" + (f"/{n_trials}" if n_trials else "") + f"; {duration(elapsed)} elapsed"
            + (f", about {duration(left)} left" if left is not None else "") + "]")


class GridProgress:
    """The progress of ``cells`` (the cells this command trains) in ``run``; ``epochs[cell.arch]`` is how many
    epochs a cell of that architecture trains. The time left is extrapolated from the epochs trained since
    ``started`` (a resumed cell's earlier epochs do not count) to the epochs still to train."""

    def __init__(self, run: RunDir, cells: list[Cell], epochs: dict[str, int], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run, self.cells, self.epochs, self.clock = run, list(cells), epochs, clock
        self.started = self.last_line = clock()
        self.last_done = 0
        self.seen: dict[Cell, CellProgress] = {}  # the last progress read of each cell

    def line(self) -> str:
        """``cells 5/12 done, running: unet fold1-seed0 epoch 8/40, ...; 3.1 min elapsed, about 4.2 min left``."""
        done, running, trained, left = 0, [], 0, 0
        for cell in self.cells:
            epochs = self.epochs[cell.arch]
            if self.run.is_done(cell):
                done += 1
                seen = self.seen.get(cell)
                trained += epochs - (seen.start if seen else 0)
                continue
            now = CellProgress.read(self.run.progress_file(cell)) if self.run.claim_file(cell).is_file() else None
            if now is not None:
                self.seen[cell] = now
                trained += now.epoch - now.start
                left += now.epochs - now.epoch
                running.append(f"{cell.arch} {cell.name} epoch {now.epoch}/{now.epochs}")
            else:
                left += epochs
                if self.run.claim_file(cell).is_file():
                    running.append(f"{cell.arch} {cell.name} starting")
        self.last_done = done
        shown = running[:SHOWN_RUNNING] + ([f"{len(running) - SHOWN_RUNNING} more"] if len(running) > SHOWN_RUNNING else [])
        return (f"cells {done}/{len(self.cells)} done" + (f", running: {', '.join(shown)}" if shown else "")
                + eta(self.clock() - self.started, trained, trained + left))

    def due(self) -> str | None:
        """A line when a cell has finished since the last one, or ``LINE_EVERY_S`` have passed; else None."""
        before = self.last_done
        text = self.line()
        if self.last_done == before and self.clock() - self.last_line < LINE_EVERY_S:
            return None
        self.last_line = self.clock()
        return text


@contextmanager
def watching(run: RunDir, cells: list[Cell], epochs: dict[str, int], enabled: bool = True) -> Iterator[None]:
    """Print ``GridProgress`` lines from a background thread while the body trains ``cells``, and a last one when
    it ends (``cells N/N done`` after a complete run). Reads only; ``enabled`` False prints nothing."""
    if not enabled:
        yield
        return
    grid = GridProgress(run, cells, epochs)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_S):
            text = grid.due()
            if text is not None:
                say(text)

    thread = threading.Thread(target=watch, name="salt-bench-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        before = grid.last_done
        text = grid.line()
        if grid.last_done != before:  # the last cells finished since the last line
            say(text)
