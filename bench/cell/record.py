"""What a finished cell leaves: its ``metrics.json`` record and its files, through the ``bench.rundir`` records."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import architectures
from bench import classifier, cost, rundir, runtime
from bench.cell.data import FoldSplit
from bench.cell.loop import CellState
from bench.cell.prediction import KeptPrediction
from bench.cell.trainer import Trainer
from bench.config import ArchPlan
from bench.identity import cell_hash
from bench.rundir import Cell, CellRecord


def cell_metrics(plan: ArchPlan, cell: Cell, trainer: Trainer, split: FoldSplit, state: CellState,
                 kept: KeptPrediction, identity: dict[str, Any], wall_s: float) -> CellRecord:
    """``metrics.json``: what the cell is, what it kept, how it went and what it cost."""
    p, device = plan.protocol, trainer.device
    described = architectures.describe(trainer.model, input_size=p.input.size, in_channels=1)
    flops = cost.count_flops(plan)
    head = {}
    if kept.oof_head is not None:  # the head as a classifier of this fold's validation images, at 0.5
        judged = classifier.classifier_metrics(kept.oof_head, ~split.val_truth.any(axis=(1, 2)))
        head = {"head_accuracy": judged["accuracy"], "head_roc_auc": judged["roc_auc"]}
    return CellRecord(
        arch=cell.arch, fold=cell.fold, seed=cell.seed, protocol_hash=plan.protocol_hash,
        cell_hash=cell_hash(identity), identity=identity, recipe=plan.recipe_label(), tuned=plan.tuned,
        status=kept.status, stop_reason=state.stop_reason, arch_kwargs=plan.model,
        arch_train=plan.recipe_override, encoder=plan.model["encoder"],
        params=described["params"], macs=described["macs"], output_stride=described["output_stride"],
        checkpoint=p.checkpoint, kept_epochs=kept.kept_epochs, epochs=p.epochs, epochs_run=len(state.history),
        val_score=kept.val_score,
        train_images_per_s=state.train_images / max(state.train_time, 1e-9),
        infer_images_per_s=kept.infer_images_per_s,
        # cost: FLOPs counted (the same on any machine), seconds and latency measured on this device
        train_flops=flops.train * state.train_images, infer_flops=flops.infer, train_s=state.train_time,
        infer_ms=cost.latency_ms(trainer.model, p.input, device, trainer.arithmetic),
        peak_mem_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        device=str(device), device_name=runtime.device_name(device), dtype=identity["dtype"],
        n_train=len(split.train_idx), n_val=len(split.val_idx), wall_s=wall_s, **head,
    )


def write_artefacts(out_dir: Path, metrics: CellRecord, state: CellState, kept: KeptPrediction,
                    val_ids: np.ndarray) -> None:
    """The cell's files, ``metrics.json`` last: its presence marks the cell done."""
    if kept.model_state is not None:
        rundir.write_weights(out_dir / rundir.MODEL, kept.model_state)
    oof = rundir.OofPrediction(val_ids, kept.oof_tta, kept.oof_plain, kept.oof_head, kept.oof_head_plain)
    oof.write(out_dir / rundir.OOF)
    rundir.History.of(state.history).write(out_dir / rundir.HISTORY)
    metrics.write(out_dir / rundir.METRICS)
    (out_dir / rundir.CHECKPOINT).unlink(missing_ok=True)
