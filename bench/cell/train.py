"""``train_cell``: one cell as phases: build (split, trainer, resume), the epochs, the kept prediction, its
record, and its files."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bench import rundir
from bench.cell.data import DeviceData, FoldSplit
from bench.cell.loop import BatchHook, CellState, EpochHook, run_epochs
from bench.cell.prediction import finish
from bench.cell.record import cell_metrics, write_artefacts
from bench.cell.trainer import Trainer
from bench.config import ArchPlan
from bench.errors import BenchError
from bench.identity import cell_hash, cell_identity
from bench.rundir import Cell, CellRecord


def train_cell(
    plan: ArchPlan,
    cell: Cell,
    data: DeviceData,
    folds: np.ndarray,
    out_dir: Path,
    *,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = True,
    progress_file: Path | None = None,
) -> CellRecord:
    """Train one cell and write its artefacts to ``out_dir``; resumes from ``checkpoint.pt`` if present.

    ``on_batch(epoch, x, y)`` sees every augmented batch (tests hash them); ``on_epoch(epoch, score)``
    sees every validation score and may raise to stop the cell (Optuna pruning). ``progress_file`` (``RunDir.
    progress_file``) gets the epochs done after each epoch, for the run's progress lines, and is deleted before
    the artefacts are written.
    """
    out_dir, device = Path(out_dir), data.images.device
    budget = plan.protocol.budget
    if budget is not None and plan.arch not in budget.epochs:
        raise BenchError(f"protocol.budget: no epochs derived for {plan.arch} (bench.cost.resolve runs when the data loads)")
    split = FoldSplit.of(data, folds, cell.fold, plan.protocol)
    trainer = Trainer(plan, cell, data, split.steps_per_epoch)
    identity = cell_identity(plan, device)
    chash = cell_hash(identity)
    ckpt_path = out_dir / rundir.CHECKPOINT
    state = CellState.resume(ckpt_path, chash, trainer)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_cell = time.perf_counter()
    run_epochs(trainer, data, split, cell, state, chash, ckpt_path, on_batch=on_batch, on_epoch=on_epoch,
               progress=progress, progress_file=progress_file)

    kept = finish(trainer, data, split, state)
    val_ids = np.array([data.ids[i] for i in split.val_idx.cpu().tolist()])
    metrics = cell_metrics(plan, cell, trainer, split, state, kept, identity, time.perf_counter() - t_cell)
    if progress_file is not None:
        progress_file.unlink(missing_ok=True)
    write_artefacts(out_dir, metrics, state, kept, val_ids)
    return metrics
