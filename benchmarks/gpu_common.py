"""What the ``gpu_*`` benchmarks share: the grid a config describes, the harness on random data, time-boxed loops,
the run's plan (each mode's share of ``--minutes``) and the printed tables."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from bench import cost
from bench.cell.data import DeviceData, FoldSplit
from bench.cell.loop import is_validation_epoch
from bench.config import ArchPlan, Config, ProtocolConfig

MAX_CHUNK = 32  # steps a time-boxed loop runs between two looks at the clock (each look waits for the device)


# --- the grid a config describes -------------------------------------------------------------------------------------

def pool(cfg: Config) -> int:
    """Labelled images the folds are cut from: ``n_train`` (a subset caps it); a data folder loses ``holdout``."""
    d = cfg.data
    n = min(d.n_train, d.subset or d.n_train)
    return n if d.source == "synthetic" else round(n * (1 - d.holdout))


def grid_budget(cfg: Config) -> Config:
    """``cfg`` with ``protocol.budget``'s epochs derived on folds of the configured pool's size (``bench.cost``)."""
    return cost.resolve(cfg, pool(cfg))


def grid_steps_per_epoch(cfg: Config, plan: ArchPlan) -> int:
    return cost.steps_per_epoch(pool(cfg) - pool(cfg) // plan.protocol.folds, plan.protocol.batch_size)


def stages(p: ProtocolConfig) -> list[tuple[str, int]]:
    """The loss stages as (name, first epoch): ``first`` at 0, ``then`` at ``switch_epoch`` when the loss switches."""
    loss = p.loss
    if loss.then is None or loss.switch_epoch is None:
        return [("first", 0)]
    return [("first", 0), ("then", loss.switch_epoch)]


def epochs_by_stage(p: ProtocolConfig) -> dict[str, int]:
    switch = min(p.loss.switch_epoch, p.epochs) if p.loss.then is not None else p.epochs
    return {"first": switch, "then": p.epochs - switch}


def validations(plan: ArchPlan) -> int:
    """Validated epochs of a cell (``runtime.validate_every`` and the last)."""
    return sum(is_validation_epoch(plan, e) for e in range(plan.protocol.epochs))


def checkpoints(plan: ArchPlan, cell_s: float) -> int:
    """Resume checkpoints of a cell that takes ``cell_s``: one at most every ``checkpoint_every`` seconds,
    none after the last epoch."""
    every, epochs = plan.runtime.checkpoint_every, plan.protocol.epochs
    return epochs - 1 if every <= 0 else min(epochs - 1, int(cell_s // every))


# --- the harness on random data --------------------------------------------------------------------------------------

def random_data(n: int, device: torch.device) -> DeviceData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) < rng.random((n, 1, 1))  # coverage from empty to full, uniformly
    return DeviceData.from_arrays([f"{i:05d}" for i in range(n)], images, masks, device)


def split_of(data: DeviceData, n_train: int, p: ProtocolConfig) -> FoldSplit:
    """A real ``FoldSplit`` whose training images are the first ``n_train`` (whole batches), validation the rest."""
    folds = np.zeros(len(data.ids), dtype=np.int64)
    folds[:n_train] = 1
    return FoldSplit.of(data, folds, 0, p)


def chunk_splits(data: DeviceData, p: ProtocolConfig, steps: int) -> dict[int, FoldSplit]:
    """A ``FoldSplit`` of n batches for each chunk size ``boxed`` can choose up to ``steps`` steps (built ahead: building
    one waits for the device). ``data`` holds at least ``max_chunk(steps)`` batches."""
    return {n: split_of(data, n * p.batch_size, p) for n in chunk_sizes(steps)}


# --- timing ----------------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn`` takes: CUDA events on the current stream on CUDA, ``perf_counter`` elsewhere."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def repeat(fn: Callable[[], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn()

    return run


def max_chunk(steps: int) -> int:
    """The largest chunk ``boxed`` runs for a loop of at most ``steps`` steps."""
    return chunk_sizes(steps)[-1]


def chunk_sizes(steps: int) -> list[int]:
    """The chunk sizes ``boxed`` can choose: powers of two up to ``MAX_CHUNK`` and ``steps``."""
    limit = max(1, min(steps, MAX_CHUNK))
    return [1 << k for k in range(limit.bit_length()) if 1 << k <= limit]


def boxed(chunk: Callable[[int], Callable[[], Any]], steps: int, seconds: float,
          device: torch.device) -> tuple[list[int], float]:
    """Run ``chunk(n)()`` (n steps) until ``steps`` steps are done or ``seconds`` of them are spent, one step at least.

    Chunks start at one step and double up to ``MAX_CHUNK`` while the pace so far says they fit in what is left of
    the box; each is timed with ``timed`` (one wait for the device per chunk, as at the end of an epoch). Returns
    the chunk sizes run (powers of two: replayable, see ``determinism_check``) and their seconds.
    """
    sizes = chunk_sizes(steps)
    chunks: list[int] = []
    spent, n = 0.0, 1
    while True:
        run = chunk(n)  # built outside the timed part
        spent += timed(run, device)
        chunks.append(n)
        done = sum(chunks)
        if done >= steps or spent >= seconds:
            return chunks, spent
        fit = (seconds - spent) * done / spent if spent > 0 else float("inf")  # steps left in the box at this pace
        n = max([s for s in sizes if s <= min(2 * n, steps - done, fit)], default=1)


# --- the plan: each mode's share of the run --------------------------------------------------------------------------

@dataclass
class Mode:
    """One part of the run with a fixed share of ``--minutes`` (``seconds``; None: not time-boxed). Each of its
    ``units`` (an architecture, an architecture at one worker count, ...) gets what is left of the share over the
    units left, so what one unit's setup overran comes out of the units after it."""

    name: str
    what: str
    units: int
    seconds: float | None
    actual_s: float | None = None
    skipped: int = 0
    _start: float = 0.0
    _left: int = 0

    def __enter__(self) -> Mode:
        self._start, self._left = time.monotonic(), self.units
        return self

    def __exit__(self, *exc: object) -> None:
        self.actual_s = time.monotonic() - self._start

    def left_s(self) -> float:
        """Seconds left of the share (infinite when not time-boxed)."""
        if self.seconds is None:
            return float("inf")
        return max(0.0, self._start + self.seconds - time.monotonic())

    def slice(self) -> float:
        """Seconds for the next unit: what is left of the share over the units left."""
        s = self.left_s() / max(self._left, 1)
        self._left -= 1
        return s

    def skip_spent(self) -> bool:
        """Whether the next unit is skipped because the share is spent (counted in ``skipped``)."""
        if self.left_s() > 0:
            return False
        self._left -= 1
        self.skipped += 1
        return True


def print_plan(modes: list[Mode], minutes: float, steps: int) -> None:
    if all(m.seconds is None for m in modes):
        print(f"plan (--minutes {minutes:g}): nothing is measured, so nothing is time-boxed")
    else:
        print(f"plan (--minutes {minutes:g}): each mode has a fixed share; each of its units gets what is left of the "
              f"share over the units left, and a timed loop stops when its slice is spent or at --steps {steps}; "
              "setup, warm-up, profiling, compilation and worker start are not boxed and come out of the slices after "
              "them")
    for m in modes:
        share = "not boxed" if m.seconds is None else f"{m.seconds:.0f} s"
        print(f"  {m.name:<12} {share:>9}  {m.what}")


def print_actual(modes: list[Mode]) -> None:
    print_table("Plan against actual (seconds per mode)", [
        {"mode": m.name, "planned_s": fmt(m.seconds, 0), "actual_s": fmt(m.actual_s, 0), "skipped_units": m.skipped}
        for m in modes])


# --- tables ----------------------------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, records: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(pd.DataFrame(records).to_string(index=False))
