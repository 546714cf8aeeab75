"""Where the cells of a grid run: one after another in this process (``local``) or as Ray tasks (``ray``).

Both executors only schedule. ``train_cell`` writes each cell's artefacts atomically into the run
directory, ``metrics.json`` last, so a cell is done exactly when that file exists, whoever trained it.
Ray workers therefore read their inputs from the run directory (``config.yaml``'s dict travels with the
task, the data and folds come from ``data.npz``) and write the cell there themselves: the run directory
must be on a filesystem every node sees at the same path (NFS, a cluster mount). The driver moves no
tensors and no checkpoints, so resume, a killed cell restarting from its last checkpointed epoch and a
partial failure behave exactly as with the local executor.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from typing import Any, Callable

import torch

from bench import atomic, runtime
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.config import Config
from bench.errors import BenchError, summary
from bench.progress import say, watching
from bench.redact import mask_url
from bench.rundir import Cell, CellRecord, RunDir

MAX_RETRIES = 3  # a worker (or node) that dies mid-cell: the cell is rerun from its last checkpoint


def cell_line(m: CellRecord) -> str:
    """One line per finished cell, the same whichever executor trained it."""
    return (f"done {m.arch:<14} fold {m.fold} seed {m.seed}: val {m.val_score:.4f} "
            f"({m.checkpoint} checkpoint, {m.stop_reason}), {m.train_images_per_s:.0f} img/s, {m.wall_s:.0f} s")


def _device_data(run: RunDir, device: torch.device) -> tuple[DeviceData, Any]:
    """The run's train images on ``device`` and its folds, from ``data.npz`` (what every executor trains on)."""
    saved = run.load_data()
    data = DeviceData.from_arrays([str(i) for i in saved.ids], saved.images, saved.masks, device)
    return data, saved.folds.astype("int64")


def claim(run: RunDir, cell: Cell) -> bool:
    """Take ``cell`` for this process, atomically: ``claim`` in the cell's folder, holding host and pid, created
    complete or not at all (``atomic.create_new``). Two ``salt-bench run`` on one run directory (or two local
    workers) never train the same cell. A claim left by a dead process of this host is taken over, and so is one
    that names no process (empty or unreadable as "host pid": nothing of this version writes one, so its writer
    is gone); a live one, or one of another host, is respected.
    """
    path = run.claim_file(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(3):
        if atomic.create_new(path, me):
            return True
        try:
            held = path.read_text()
        except FileNotFoundError:
            continue  # released meanwhile: try again
        fields = held.split()
        names_a_process = len(fields) == 2 and fields[1].isdigit()
        if names_a_process and (fields[0] != socket.gethostname() or atomic.pid_alive(int(fields[1]))):
            return False
        stale = path.with_name(f".claim.{os.getpid()}.stale")
        try:
            os.replace(path, stale)  # only one taker moves it; a claimant that lost the race finds no file
        except FileNotFoundError:
            continue
        if stale.read_text() != held:  # moved a fresh claim made meanwhile: put it back if nobody has claimed since
            try:
                os.link(stale, path)
            except FileExistsError:
                pass
        stale.unlink(missing_ok=True)
    return False


def release(run: RunDir, cell: Cell) -> None:
    run.claim_file(cell).unlink(missing_ok=True)


def _train_claimed(cells: list[Cell], cfg: Config, run: RunDir, progress: bool) -> list[Cell]:
    """Train every cell of ``cells`` this process can claim; returns the ones another process holds. ``progress``
    draws a bar over each cell's epochs."""
    data, folds = _device_data(run, runtime.setup(cfg))
    elsewhere = []
    for cell in cells:
        if run.is_done(cell):
            continue
        if not claim(run, cell):
            elsewhere.append(cell)
            continue
        try:
            if not run.is_done(cell):  # finished by another process between our check and our claim
                metrics = train_cell(cfg.plan(cell.arch), cell, data, folds, run.cell_dir(cell), progress=progress,
                                     progress_file=run.progress_file(cell))
                say(cell_line(metrics))
        finally:
            release(run, cell)
    return elsewhere


def exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """Exit this worker soon after the process that started it (``salt-bench run``, a benchmark) is gone (killed,
    even with -9), so no orphan keeps training; a cell's claim then names a dead process and the next run takes
    the cell over."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker(cfg_dict: dict[str, Any], run_dir: str, cells: list[tuple[str, int, int]], parent: int) -> None:
    """Body of one local worker process: claim and train what is left of ``cells``."""
    from bench import config as bconfig

    exit_with_parent(parent)
    cfg = bconfig.from_dict(cfg_dict, source="the config sent to a local worker")
    _train_claimed([Cell(*c) for c in cells], cfg, RunDir(run_dir), progress=False)


def execute_local(cells: list[Cell], cfg: Config, run: RunDir, *, progress: bool = True, **options: Any) -> None:
    """Train the cells on this machine: in this process (``runtime.workers`` 1) or in that many worker processes,
    each claiming pending cells. Results do not depend on the worker count (each cell's result is a function of
    its identity); on CPU each worker gets ``threads / workers`` threads unless ``runtime.threads`` is set.
    ``progress`` prints ``bench.progress`` lines (cells done, running epochs, time left) as the cells train."""
    if options:
        raise BenchError(f"the local executor takes no options (got {', '.join(sorted(options))})")
    workers = runtime.workers(cfg.runtime)
    epochs = {arch: cfg.plan(arch).protocol.epochs for arch in {c.arch for c in cells}}
    if workers <= 1:
        with watching(run, cells, epochs, enabled=progress):
            elsewhere = _train_claimed(cells, cfg, run, progress)
    else:
        import multiprocessing

        cfg = runtime.for_workers(cfg, workers)
        ctx = multiprocessing.get_context("spawn")
        args = (cfg.to_dict(), str(run.path), [(c.arch, c.fold, c.seed) for c in cells], os.getpid())
        procs = [ctx.Process(target=_worker, args=args, name=f"salt-bench-worker-{i}") for i in range(workers)]
        print(f"{workers} local workers, {cfg.runtime.threads} threads each", flush=True)
        try:
            with watching(run, cells, epochs, enabled=progress):
                for p in procs:
                    p.start()
                for p in procs:
                    p.join()
        finally:  # an interrupted run stops its workers too
            for p in procs:
                if p.is_alive():
                    p.terminate()
        failed = [p.name for p in procs if p.exitcode != 0]
        if failed:
            raise BenchError(f"{len(failed)} of {workers} local workers failed ({', '.join(failed)}); finished cells "
                             "are kept, run again to retry the others")
        elsewhere = [c for c in cells if not run.is_done(c)]
    if elsewhere:
        print(f"{len(elsewhere)} cells are being trained by another process on this run directory "
              f"({', '.join(f'{c.arch} {c.name}' for c in elsewhere[:4])}{', ...' if len(elsewhere) > 4 else ''}); "
              "the leaderboard below leaves them out: run again when that process has finished")


def _ray_cell(cfg_dict: dict[str, Any], run_dir: str, arch: str, fold: int, seed: int) -> CellRecord:
    """Body of one Ray task: rebuild the config, load the run's data on this worker's device, train the cell.

    A cell already finished (its task retried after the worker died between writing ``metrics.json``
    and returning) is not trained again.
    """
    import ray

    from bench import config as bconfig

    cfg = bconfig.from_dict(cfg_dict, source="the config sent by the Ray driver")
    cell, run = Cell(arch, fold, seed), RunDir(run_dir)
    if run.is_done(cell):
        return run.cell_metrics(cell)
    if cfg.runtime.device == "auto" and not ray.get_gpu_ids():  # Ray leaves every GPU visible to such a task
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device="cpu"))
    data, folds = _device_data(run, runtime.setup(cfg))
    return train_cell(cfg.plan(arch), cell, data, folds, run.cell_dir(cell), progress=False)


def _import_ray(local: bool) -> Any:
    """Ray, imported on first use because it is an optional extra.

    A local Ray started here is a one-machine cluster: with multi-node mode off Ray takes 127.0.0.1 as
    the node address and binds its servers there, not on the machine's network interfaces. That switch
    is read when ray is imported, so it is set before the import.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'salt-bench[ray]'") from None
    return ray


def _check_cuda(cfg: Config, gpus_per_cell: float | None) -> None:
    """A cell that asked Ray for no GPU must not use one (Ray would not account for it), so cuda cannot work."""
    if cfg.runtime.device == "cuda" and gpus_per_cell == 0:
        raise BenchError("runtime.device is cuda but --gpus-per-cell is 0 (or the cluster has no GPU): "
                         "Ray would give the cells no GPU")


def _check_resources(ray: Any, gpus_per_cell: float, cpus_per_cell: float) -> None:
    """A request no node can ever satisfy would wait forever: say so instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus_per_cell and n.get("GPU", 0) >= gpus_per_cell for n in nodes):
        have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes) or "no live node"
        raise BenchError(f"--gpus-per-cell {gpus_per_cell:g} --cpus-per-cell {cpus_per_cell:g}: no node of the "
                         f"Ray cluster has that much ({have})")


def execute_ray(
    cells: list[Cell],
    cfg: Config,
    run: RunDir,
    *,
    progress: bool = True,
    address: str | None = None,
    gpus_per_cell: float | None = None,
    cpus_per_cell: float = 1.0,
    num_cpus: int | None = None,
    max_retries: int = MAX_RETRIES,
) -> None:
    """Run each cell as a Ray task with its resource request; workers write into the shared run directory.

    ``address`` None starts a private local Ray on 127.0.0.1 with ``num_cpus`` CPUs (all by default) and
    stops it at the end; ``auto`` or ``HOST:PORT`` joins a running cluster. ``gpus_per_cell`` None means
    one GPU per cell when the cluster has GPUs and ``runtime.device`` is not ``cpu``, else none; fractions
    pack several cells on one GPU. Cells that fail are reported together after the others have finished,
    and are kept pending, so running again retrains only them. Ctrl-C cancels the outstanding tasks;
    finished cells stay.
    """
    from tqdm.auto import tqdm

    _check_cuda(cfg, gpus_per_cell)
    ray = _import_ray(local=address is None)
    started = False
    if not ray.is_initialized():
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as exc:
                raise BenchError(f"--ray-address {mask_url(address)}: {mask_url(str(exc).splitlines()[0])}") from None
        started = True
    try:
        resources = ray.cluster_resources()
        if gpus_per_cell is None:
            gpus_per_cell = 1.0 if resources.get("GPU", 0) > 0 and cfg.runtime.device != "cpu" else 0.0
        _check_cuda(cfg, gpus_per_cell)
        _check_resources(ray, gpus_per_cell, cpus_per_cell)
        print(f"ray: {'started a local cluster' if address is None else 'joined ' + mask_url(address)} "
              f"({resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, node {ray.util.get_node_ip_address()}); "
              f"each cell asks {cpus_per_cell:g} CPU, {gpus_per_cell:g} GPU")
        task = ray.remote(_ray_cell).options(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=max_retries,
                                             name="salt-bench-cell")
        cfg_dict, where = cfg.to_dict(), str(run.path.resolve())
        pending = {task.remote(cfg_dict, where, c.arch, c.fold, c.seed): c for c in cells}
        failed: list[str] = []
        bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ready[0])
                try:
                    tqdm.write(cell_line(ray.get(ready[0])))
                except ray.exceptions.RayError as exc:
                    reason = _cause(exc)
                    failed.append(f"{cell.arch} {cell.name}: {reason}")
                    tqdm.write(f"failed {cell.arch:<14} fold {cell.fold} seed {cell.seed}: {reason}")
                bar.update()
        except KeyboardInterrupt:
            if not started:  # a cluster we joined keeps running: stop our tasks there; our own one shuts down below
                for ref in pending:
                    ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        if failed:
            raise BenchError(f"{len(failed)} of {len(cells)} cells failed (the others are kept; run again to retry "
                             f"them): {'; '.join(failed)}")
    finally:
        if started:
            ray.shutdown()


def _cause(exc: BaseException) -> str:
    """The one-line reason of a failed task: the worker's own exception when there is one."""
    cause = getattr(exc, "cause", None)
    return summary(cause if isinstance(cause, BaseException) else exc)


Executor = Callable[..., None]
#: name -> ``execute(cells, cfg, run, *, progress, **options)``; every executor leaves the same run directory.
EXECUTORS: dict[str, Executor] = {"local": execute_local, "ray": execute_ray}
