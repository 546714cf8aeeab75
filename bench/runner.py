"""The grid of cells (architectures x folds x seeds) under one protocol: prepare, resume, execute, aggregate.

A run directory holds exactly one protocol (its hash is in ``protocol.json`` and in every cell); running
again with the same config resumes: finished cells (with ``metrics.json``) are skipped.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench import config as bconfig
from bench import console, holdout, identity, results, runtime
from bench.config import Config, protocol_hash
from bench.data import folds as bfolds
from bench.errors import BenchError
from bench.executors import EXECUTORS
from bench.prepare import grid, load_data, prepare
from bench.rundir import METRICS, Cell, Environment, RunDir
from bench.rundir.tables import Aggregate


def _check_cell_settings(cfg: Config, cell: Cell, run: RunDir) -> None:
    """A finished cell must have been trained with the architecture's current model options and recipe."""
    done, plan = run.cell_metrics(cell), cfg.plan(cell.arch)
    then = {**done.arch_kwargs, "train": done.arch_train}
    now = {**plan.model, "train": plan.recipe_override}
    if then != now:
        raise BenchError(
            f"{run.cell_dir(cell) / METRICS}: {cell.arch} was trained with {then}, "
            f"the config now says {now}; use a new --out"
        )


def _check_environment(cfg: Config, run: RunDir, arch: str, device: torch.device) -> None:
    """Refuse to train where the run's finished cells did not (another device, dtype, library or code version),
    before anything is trained or written: the aggregation would refuse the mix only after training, and the
    cell trained meanwhile would make the run fail under its original settings too."""
    here = identity.environment(identity.cell_identity(cfg.plan(arch), device))
    for cell in run.done_cells():
        then = identity.environment(run.cell_metrics(cell).identity)
        differ = [f"{key} {then[key]!r} there, {here[key]!r} here" for key in here if then[key] != here[key]]
        if differ:
            raise BenchError(f"{run.cell_dir(cell) / METRICS}: finished in another environment than this "
                             f"process would train in ({'; '.join(differ)}); resume with the runtime settings it ran "
                             "with, use a new --out, or pass --allow-mixed to rank cells of both")


def run_grid(cfg: Config, run_dir: Path | RunDir, *, archs: list[str] | None = None, folds: list[int] | None = None,
             progress: bool = True, executor: str = "local", executor_options: dict[str, Any] | None = None,
             allow_mixed: bool = False) -> pd.DataFrame:
    """Train every pending cell of the grid, then aggregate the run directory. Returns the leaderboard.

    ``executor`` names one of ``EXECUTORS``; ``executor_options`` are its keyword options (for ``ray``:
    address, gpus_per_cell, cpus_per_cell, ...). Ray workers pick their own devices, so the driver needs none.
    """
    run = RunDir(run_dir)
    if executor not in EXECUTORS:
        raise BenchError(f"executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    device = runtime.setup(cfg) if executor == "local" else None
    cells = grid(cfg, archs, folds)
    data = load_data(cfg, run)
    cfg = data.cfg
    pending = []
    for cell in cells:  # checked before anything is written: a refused resume leaves the run directory as it was
        if run.is_done(cell):
            _check_cell_settings(cfg, cell, run)
        else:
            pending.append(cell)
    if pending and device is not None and not allow_mixed:
        _check_environment(cfg, run, pending[0].arch, device)
    prepare(cfg, run)
    if not run.data_file.is_file():  # the train images every cell of the run reads (Ray workers and the report too)
        data.development.write(run.data_file)
    if not run.holdout_data_file.is_file():
        data.holdout.write(run.holdout_data_file)
    bfolds.export_imagesets(data.development.ids, data.development.folds, run.imagesets_dir)
    env = runtime.environment(cfg.runtime, device or torch.device("cpu"))
    if device is None:
        env.update(executor=executor, device=executor, device_name="Ray workers (each cell's metrics.json has its device)")
    Environment(env).write(run.env_file)
    print(f"{run}: protocol {protocol_hash(cfg)}, {len(cells)} cells, {len(cells) - len(pending)} already done, "
          f"{len(pending)} to train on {device or executor}")
    if pending:
        EXECUTORS[executor](pending, cfg, run, progress=progress, **(executor_options or {}))
    if device is None:  # the driver predicts the holdout in the arithmetic the cells trained in
        device = runtime.pick_device(cfg.runtime)
    holdout.predict(run, cfg, device, runtime.arithmetic(cfg.runtime, device, announce=True), progress=progress)
    board, _ = results.aggregate(run, allow_mixed=allow_mixed)
    return board


def run_command(config_paths: list[str] | None, overrides: list[str], *, out: Path | None = None,
                archs: list[str] | None = None, folds: list[int] | None = None, executor: str = "local",
                executor_options: dict[str, Any] | None = None, report: bool = True,
                allow_mixed: bool = False) -> pd.DataFrame:
    """``salt-bench run``: load the config (the machine's default when none is given), run, print, report."""
    paths = runtime.config_paths(config_paths, "run")
    cfg = bconfig.load(paths, overrides)
    run_dir = RunDir(out or runtime.default_run_dir(cfg))
    t0 = time.perf_counter()
    board = run_grid(cfg, run_dir, archs=archs, folds=folds, progress=True, executor=executor,
                executor_options=executor_options, allow_mixed=allow_mixed)
    print(f"\nleaderboard ({run_dir.leaderboard_file}):")
    aggregate = Aggregate.read(run_dir.aggregate_file) if run_dir.aggregate_file.is_file() else None
    print(console.format_leaderboard(board, aggregate))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    if report:
        from bench.report import build

        print(f"report: {build.build_report(run_dir.path)}")
    else:
        print(f"no report (--no-report): `salt-bench report {run_dir}` writes {run_dir.report_file}")
    return board
