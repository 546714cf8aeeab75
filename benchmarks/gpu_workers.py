"""The grid's real shape on one device: ``runtime.workers`` processes sharing it, each running the harness loop
(``train_one_epoch``: ``batch_stream`` + augmentation + ``Trainer.step``) on random data, against one process alone;
without NVIDIA MPS and, where a private MPS control daemon starts, with it.

The processes are spawned as ``salt-bench run`` spawns its workers (``bench.executors``: the 'spawn' context, the
config as a dict, the CPU's cores shared by ``runtime.for_workers``) and live for every architecture of one
(processes, MPS) setting. Per architecture each builds its trainer and warms it up, then all start together at a
barrier and run a time-boxed loop (``gpu_common.boxed``). Reported per architecture: the aggregate images/s of N
processes (their images over the span from the first start to the last end), the images/s of one process, the
scaling N-proc/1-proc, the steps done, and on CUDA each process's peak memory (PyTorch's allocator: the CUDA
context is not in it).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Iterator

import torch
from gpu_common import Mode, boxed, chunk_splits, fmt, grid_steps_per_epoch, max_chunk, print_table, random_data, split_of

from bench import config, executors, runtime
from bench.cell.loop import train_one_epoch
from bench.cell.trainer import Trainer
from bench.config import Config
from bench.errors import BenchError, summary
from bench.rundir import Cell

MPS_CONTROL = "nvidia-cuda-mps-control"
BARRIER_TIMEOUT_S = 300.0  # a process whose partner never reaches the barrier gives up and reports it
READY_TIMEOUT_S = 120.0  # spawn, imports, CUDA context (MPS's client connection included)
REPLY_TIMEOUT_S = 300.0  # beyond an architecture's slice: its model, warm-up (compilation if configured)
CONTROL_TIMEOUT_S = 60.0
SKIPPED = "skipped: the workers share was spent"


@dataclass
class ProcessRun:
    """One process's timed loop on one architecture."""

    steps: int
    images: int
    start: float  # time.time() when the barrier released it: one clock for every process
    end: float
    peak_mb: float | None  # CUDA only


@dataclass
class WorkersRow:
    """One architecture run by ``procs`` processes together, with or without MPS."""

    arch: str
    mps: bool
    procs: int
    runs: list[ProcessRun]  # one per process; empty when it failed or was skipped
    error: str | None = None

    @property
    def images_per_s(self) -> float | None:
        """Images of every process over the span from the first start to the last end."""
        if not self.runs:
            return None
        return sum(r.images for r in self.runs) / (max(r.end for r in self.runs) - min(r.start for r in self.runs))


# --- MPS -------------------------------------------------------------------------------------------------------------

def mps_unavailable(device: torch.device) -> str | None:
    """Why MPS cannot be tried on ``device``, or None when it can."""
    if device.type != "cuda":
        return "no CUDA"
    if shutil.which(MPS_CONTROL) is None:
        return f"{MPS_CONTROL} is not on PATH"
    return None


def _control(args: list[str], stdin: str | None, env: dict[str, str], out: Path) -> str | None:
    """Run ``nvidia-cuda-mps-control``: None when it succeeded, else why not in one line. Its output goes to a file,
    not a pipe: the daemon it forks must not hold our pipe open."""
    try:
        with out.open("w") as sink:
            done = subprocess.run([MPS_CONTROL, *args], input=stdin, stdin=None if stdin else subprocess.DEVNULL,
                                  stdout=sink, stderr=subprocess.STDOUT, env=env, text=True, timeout=CONTROL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return summary(exc)
    if done.returncode == 0:
        return None
    said = out.read_text().strip().splitlines()
    return f"exit code {done.returncode}" + (f": {said[-1]}" if said else "")


@contextlib.contextmanager
def mps_daemon() -> Iterator[dict[str, str] | None]:
    """A private MPS control daemon, its pipe and log directories in a temporary directory: yields the variables its
    clients need, or None when it did not start (one line says why). Told to quit on the way out, whatever happened
    inside."""
    with tempfile.TemporaryDirectory(prefix="gpu-bench-mps-", ignore_cleanup_errors=True) as tmp:
        env = {"CUDA_MPS_PIPE_DIRECTORY": str(Path(tmp) / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(Path(tmp) / "log")}
        for folder in env.values():
            os.mkdir(folder)
        full = {**os.environ, **env}
        why: str | None = "not started"
        try:
            why = _control(["-d"], None, full, Path(tmp) / "start.out")
            if why:
                print(f"MPS: the control daemon did not start ({why}); measuring without MPS only")
            yield None if why else env
        finally:
            stopped = _control([], "quit\n", full, Path(tmp) / "quit.out")
            if why is None and stopped:
                print(f"MPS: telling the control daemon to quit failed ({stopped})")


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` while processes are started (a spawned process inherits it), then as it was."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the worker processes --------------------------------------------------------------------------------------------

def _run(cfg: Config, device: torch.device, barrier: Barrier, arch: str, steps: int, warmup: int,
         seconds: float) -> ProcessRun:
    """Build and warm up ``arch``'s trainer, wait for the others, then run the harness loop time-boxed."""
    plan = cfg.plan(arch)
    p, cuda = plan.protocol, device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    data = random_data(max(max_chunk(steps), warmup) * p.batch_size, device)
    cell = Cell(arch, 0, p.seeds[0])
    trainer = Trainer(plan, cell, data, steps_per_epoch=grid_steps_per_epoch(cfg, plan))
    splits = chunk_splits(data, p, steps)
    train_one_epoch(trainer, data, split_of(data, warmup * p.batch_size, p), cell, 0)
    if cuda:
        torch.cuda.synchronize(device)
    barrier.wait(timeout=BARRIER_TIMEOUT_S)
    start = time.time()
    chunks, _ = boxed(lambda n: lambda: train_one_epoch(trainer, data, splits[n], cell, 0), steps, seconds, device)
    end = time.time()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return ProcessRun(sum(chunks), sum(chunks) * p.batch_size, start, end, peak)


def _worker(index: int, cfg_dict: dict[str, Any], commands: Queue, results: Queue, barrier: Barrier,
            parent: int) -> None:
    """Body of one process: once set up, reply (index, "ready", None); then for each (arch, steps, warmup, seconds)
    sent, (index, "run", ``ProcessRun``) or (index, "error", the error in one line); None ends it. An error breaks
    the barrier, so the others do not wait for this process."""
    executors.exit_with_parent(parent)
    cfg = config.from_dict(cfg_dict, source="the config sent to a gpu_workers process")
    device = runtime.setup(cfg)
    results.put((index, "ready", None))
    while (command := commands.get()) is not None:
        try:
            results.put((index, "run", _run(cfg, device, barrier, *command)))
        except Exception as exc:  # reported in the table; the process stays for the next architecture
            barrier.abort()
            results.put((index, "error", summary(exc)))
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the other group's processes run next on this device


class _Group:
    """``procs`` processes with a barrier of their own, started once for every architecture of a setting."""

    def __init__(self, ctx: Any, cfg: Config, procs: int) -> None:
        self.procs = procs
        self.barrier, self.results = ctx.Barrier(procs), ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(procs)]
        cfg_dict = runtime.for_workers(cfg, procs).to_dict()
        self.processes = [ctx.Process(target=_worker, args=(i, cfg_dict, self.commands[i], self.results, self.barrier,
                                                             os.getpid()), name=f"gpu-bench-worker-{procs}.{i}", daemon=True)
                          for i in range(procs)]
        self.failed: str | None = None  # set when a process died or did not reply: the group times nothing more

    def _replies(self, timeout: float) -> list[tuple[int, str, Any]]:
        """One reply per process, in process order; a process that exits first, or no reply within ``timeout``
        seconds (a process hung in CUDA's start, say), fails the group."""
        replies, deadline = [], time.monotonic() + timeout
        while len(replies) < self.procs:
            try:
                replies.append(self.results.get(timeout=1.0))
            except queue.Empty:
                dead = next((p for p in self.processes if p.exitcode is not None), None)
                if dead is not None:
                    self.failed = f"failed: {dead.name} exited with code {dead.exitcode}"
                elif time.monotonic() > deadline:
                    self.failed = f"failed: {self.procs - len(replies)} process(es) did not reply within {timeout:.0f} s"
                if self.failed:
                    raise BenchError(self.failed) from None
        return sorted(replies, key=lambda r: r[0])

    def start(self) -> None:
        for proc in self.processes:
            proc.start()

    def wait_ready(self) -> None:
        try:
            self._replies(READY_TIMEOUT_S)
        except BenchError:
            pass  # self.failed says so in every row of this group

    def time_arch(self, arch: str, steps: int, warmup: int, seconds: float, mps: bool) -> WorkersRow:
        if self.failed:
            return WorkersRow(arch, mps, self.procs, [], self.failed)
        for q in self.commands:
            q.put((arch, steps, warmup, seconds))
        try:
            replies = self._replies(seconds + REPLY_TIMEOUT_S)
        except BenchError as exc:
            return WorkersRow(arch, mps, self.procs, [], str(exc))
        errors = [payload for _, kind, payload in replies if kind == "error"]
        if errors:
            self.barrier.reset()  # broken by the failing process; every process has replied, none waits on it
            cause = next((e for e in errors if not e.startswith("BrokenBarrierError")), errors[0])
            return WorkersRow(arch, mps, self.procs, [], f"failed: {cause}")
        return WorkersRow(arch, mps, self.procs, [payload for _, _, payload in replies])

    def stop(self) -> None:
        if not self.failed:
            for q in self.commands:
                q.put(None)
            for proc in self.processes:
                proc.join(timeout=CONTROL_TIMEOUT_S)
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
                proc.join()


def run_setting(cfg: Config, archs: list[str], workers: int, steps: int, warmup: int, mode: Mode,
                mps_env: dict[str, str] | None) -> list[WorkersRow]:
    """One process and ``workers`` processes (with ``mps_env``, MPS's variables, in their environment), all started
    and set up before any slice of ``mode``'s share is handed out; then per architecture the one, then the many,
    each with its slice."""
    mps = mps_env is not None
    if mode.left_s() <= 0:  # not worth starting the processes
        for _ in range(2 * len(archs)):
            mode.skip_spent()
        return [WorkersRow(arch, mps, n, [], SKIPPED) for arch in archs for n in (1, workers)]
    ctx = multiprocessing.get_context("spawn")
    groups = [_Group(ctx, cfg, n) for n in (1, workers)]
    rows = []
    try:
        with _environment(mps_env or {}):
            for group in groups:
                group.start()
        for group in groups:
            group.wait_ready()
        for arch in archs:
            for group in groups:
                if mode.skip_spent():
                    rows.append(WorkersRow(arch, mps, group.procs, [], SKIPPED))
                else:
                    rows.append(group.time_arch(arch, steps, warmup, mode.slice(), mps))
    finally:
        for group in groups:
            group.stop()
    return rows


def measure_workers(cfg: Config, archs: list[str], device: torch.device, workers: int, steps: int, warmup: int,
                    mode: Mode) -> list[WorkersRow]:
    """Per architecture one process and ``workers`` processes: without MPS, then with it where it starts."""
    unavailable = mps_unavailable(device)
    print(f"MPS: not available ({unavailable})" if unavailable else "MPS: measured with a private control daemon")
    rows = run_setting(cfg, archs, workers, steps, warmup, mode, None)
    if unavailable is None:
        with mps_daemon() as env:
            if env is not None:
                rows += run_setting(cfg, archs, workers, steps, warmup, mode, env)
    return rows


def scaling(rows: list[WorkersRow], mps: bool, workers: int) -> dict[str, float]:
    """Per architecture measured both ways: the aggregate images/s of ``workers`` processes over one process's."""
    out = {}
    for arch in dict.fromkeys(r.arch for r in rows):
        one, many = (next((r for r in rows if r.arch == arch and r.mps == mps and r.procs == n), None) for n in (1, workers))
        if one and many and one.images_per_s and many.images_per_s:
            out[arch] = many.images_per_s / one.images_per_s
    return out


def print_workers(rows: list[WorkersRow], workers: int) -> None:
    """The table: per architecture and MPS setting, one process against ``workers`` processes."""
    records, notes = [], []
    for arch in dict.fromkeys(r.arch for r in rows):
        for mps in (False, True):
            one = next((r for r in rows if r.arch == arch and r.mps == mps and r.procs == 1), None)
            many = next((r for r in rows if r.arch == arch and r.mps == mps and r.procs == workers), None)
            if one is None and many is None:
                continue
            ratio = scaling([r for r in (one, many) if r is not None], mps, workers).get(arch)
            peaks = [r.peak_mb for r in many.runs if r.peak_mb is not None] if many else []
            records.append({
                "arch": arch, "mps": "yes" if mps else "no", "procs": workers,
                "steps_1proc": fmt(one.runs[0].steps if one and one.runs else None),
                "steps_Nproc": fmt(min(r.steps for r in many.runs) if many and many.runs else None),
                "1proc_img/s": fmt(one.images_per_s if one else None), "Nproc_img/s": fmt(many.images_per_s if many else None),
                "scaling": fmt(ratio, 2), "peak_MiB/proc": fmt(max(peaks) if peaks else None, 0)})
            notes += [f"  {arch} {r.procs} proc{'s' if r.procs > 1 else ''}{' MPS' if mps else ''}: {r.error}"
                      for r in (one, many) if r is not None and r.error]
    print_table(f"Workers sharing the device: {workers} processes against 1, harness loop of stage first started "
                "together (Nproc_img/s: all processes together; scaling: Nproc/1proc; steps_Nproc: the fewest of "
                "any process)", records)
    for note in notes:
        print(note)
