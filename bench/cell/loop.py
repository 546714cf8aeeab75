"""The epochs of one cell: train, validate, keep, and the state a killed cell resumes from (``CellState``).

After an epoch, at most every ``runtime.checkpoint_every`` seconds, the cell's state is copied to the host and
written atomically by a background thread (``bench.checkpoint``), so a killed cell resumes at its last
checkpointed epoch and ends with the same result, and the loop does not wait for the disk.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.augment import stream_seed
from bench.cell.data import INIT, DeviceData, FoldSplit, batch_stream
from bench.cell.optim import stepped_per_epoch
from bench.cell.trainer import Trainer
from bench.checkpoint import CheckpointWriter, snapshot
from bench.config import ArchPlan
from bench.errors import summary
from bench.inference import predict_outputs
from bench.metrics import iou, tgs_precision
from bench.rundir import Cell, CellProgress

BatchHook = Callable[[int, torch.Tensor, torch.Tensor], None]
EpochHook = Callable[[int, float], None]
#: the weights a crossfit cell keeps, each the best epoch so far by one validation score: the whole fold's
#: (``model.pt``), half A's (it predicts half B) and half B's (it predicts half A)
BY_FOLD, BY_HALF_A, BY_HALF_B = "best_on_fold", "best_on_half_a", "best_on_half_b"
KEPT_BY = (BY_FOLD, BY_HALF_A, BY_HALF_B)


@dataclass
class CellState:
    """Everything a killed cell needs to continue where it stopped; saved in ``checkpoint.pt`` between epochs.

    ``kept`` holds, for ``checkpoint: crossfit``, the best epoch so far by each score of ``KEPT_BY``: the whole
    fold's (the weights ``model.pt`` keeps for the holdout ensemble) and each validation half's, as copies on the
    training device: only a checkpoint's snapshot moves them to the host.
    """

    epoch: int = 0  # the next epoch to train
    history: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_time: float = 0.0
    train_images: int = 0
    stop_reason: str = "completed all epochs"
    stopped: bool = False
    diverged: bool = False

    def to_checkpoint(self, cell_hash: str, trainer: Trainer) -> dict[str, Any]:
        """A host copy of the cell's and the trainer's state: training may go on while it is written."""
        cell = {f.name: getattr(self, f.name) for f in fields(self)}
        return snapshot({"cell_hash": cell_hash, "trainer": trainer.state(), "cell": cell})

    @classmethod
    def resume(cls, path: Path, cell_hash: str, trainer: Trainer) -> CellState:
        """The state saved at ``path`` (loaded into ``trainer`` too), or a fresh one when there is none.

        A checkpoint that cannot be read, or that belongs to another cell identity (a changed recipe, model
        option, device or version), is not continued: the cell restarts, and says so.
        """
        if not path.is_file():
            return cls()
        try:
            ckpt = torch.load(path, map_location=trainer.device, weights_only=True)
            saved_hash = ckpt["cell_hash"]
        except Exception as exc:  # torch raises many types for a truncated or foreign file
            print(f"{path}: unreadable checkpoint ({summary(exc)}); the cell restarts from epoch 0")
            return cls()
        if saved_hash != cell_hash:
            print(f"{path}: checkpoint of cell identity {saved_hash}, this cell is {cell_hash} (its recipe, model, "
                  "device or versions changed); the cell restarts from epoch 0")
            return cls()
        trainer.load_state(ckpt["trainer"])
        return cls(**ckpt["cell"])


def train_one_epoch(trainer: Trainer, data: DeviceData, split: FoldSplit, cell: Cell, epoch: int,
                    on_batch: BatchHook | None = None) -> tuple[float, int, bool]:
    """One pass over the fold's training images: (mean loss, steps, whether every loss was finite)."""
    torch.manual_seed(stream_seed(cell.seed, cell.fold, epoch, INIT))  # dropout draws, epoch-resumable
    trainer.model.train()
    device = trainer.device
    loss_sum = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # on the device: no host sync between steps
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    n_steps = 0
    for x, y in batch_stream(trainer.protocol, data, split.train_idx, cell.seed, cell.fold, epoch):
        if on_batch is not None:
            on_batch(epoch, x, y)
        loss = trainer.step(x, y, epoch)
        ok = torch.isfinite(loss)
        first_bad = torch.where(finite & ~ok, torch.full_like(first_bad, n_steps), first_bad)
        finite = finite & ok
        loss_sum = loss_sum + torch.where(ok, loss, torch.zeros_like(loss))
        n_steps += 1
    if not bool(finite):  # the epoch's one check
        return float("nan"), int(first_bad), False
    return float(loss_sum) / max(n_steps, 1), n_steps, True


def validate(trainer: Trainer, data: DeviceData, split: FoldSplit) -> tuple[np.ndarray, float]:
    """Per-image TGS scores and the mean IoU of the fold's validation images at threshold 0.5, no TTA."""
    probs = predict_outputs(trainer.model, split.val_images, trainer.protocol.input, data.mean, data.std,
                            trainer.arithmetic, tta=False).masks
    pred = (probs > 0.5).cpu().numpy()
    return tgs_precision(split.val_truth, pred), float(iou(split.val_truth, pred).mean())


def is_validation_epoch(plan: ArchPlan, epoch: int) -> bool:
    """Whether ``epoch`` is validated: every ``runtime.validate_every``-th and the last. With the final checkpoint
    validation only draws the learning curves; crossfit and the plateau schedule need every epoch."""
    p = plan.protocol
    if p.checkpoint == "crossfit" or p.scheduler.name == "plateau":
        return True
    return (epoch + 1) % plan.runtime.validate_every == 0 or epoch + 1 == p.epochs


def _keep(state: CellState, key: str, score: float, epoch: int, model: torch.nn.Module) -> None:
    if score > state.kept.get(key, {"score": -1.0})["score"]:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}  # on the device
        state.kept[key] = {"score": score, "epoch": epoch, "state": weights}


def run_epoch(trainer: Trainer, data: DeviceData, split: FoldSplit, cell: Cell, state: CellState, epoch: int,
           on_batch: BatchHook | None) -> None:
    """Train, validate and record one epoch in ``state``; a non-finite loss stops the cell."""
    p, device = trainer.protocol, trainer.device
    t0 = time.perf_counter()
    train_loss, n_steps, finite = train_one_epoch(trainer, data, split, cell, epoch, on_batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    state.train_time += time.perf_counter() - t0
    state.train_images += n_steps * min(p.batch_size, len(split.train_idx))
    if not finite:
        state.stop_reason = f"non-finite loss at epoch {epoch} step {n_steps}"
        state.stopped = state.diverged = True
        return
    row = {"epoch": epoch, "lr": trainer.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
           "val_score": math.nan, "val_iou": math.nan, "val_score_a": math.nan, "val_score_b": math.nan}
    state.history.append(row)
    state.epoch = epoch + 1
    if not is_validation_epoch(trainer.plan, epoch):
        return
    scores, val_iou = validate(trainer, data, split)
    score, score_a, score_b = float(scores.mean()), float(scores[split.half_a].mean()), float(scores[~split.half_a].mean())
    row.update(val_score=score, val_iou=val_iou, val_score_a=score_a, val_score_b=score_b)
    if stepped_per_epoch(trainer.scheduler):
        trainer.scheduler.step(score)
    if p.checkpoint == "crossfit":
        for key, value in ((BY_FOLD, score), (BY_HALF_A, score_a), (BY_HALF_B, score_b)):
            _keep(state, key, value, epoch, trainer.model)


def run_epochs(trainer: Trainer, data: DeviceData, split: FoldSplit, cell: Cell, state: CellState, cell_hash: str,
               checkpoint: Path, *, on_batch: BatchHook | None, on_epoch: EpochHook | None, progress: bool,
               progress_file: Path | None) -> None:
    """Run the cell's remaining epochs into ``state``, checkpointing at most every ``runtime.checkpoint_every``
    seconds; ``on_epoch`` may raise to stop the cell."""
    from tqdm.auto import tqdm

    plan = trainer.plan
    epochs = plan.protocol.epochs
    last_checkpoint = time.perf_counter()
    start = state.epoch
    if progress_file is not None:
        CellProgress(start, epochs, start).write(progress_file)
    # the writer is joined before the artefacts, and on any exception; then the bar clears its line, so an error
    # is printed on a line of its own
    with (tqdm(total=epochs, initial=state.epoch, desc=f"{cell.arch} {cell.name}", unit="ep", leave=False,
               disable=not progress) as bar,
          CheckpointWriter(checkpoint) as writer):
        while state.epoch < epochs and not state.stopped:
            epoch = state.epoch
            run_epoch(trainer, data, split, cell, state, epoch, on_batch)
            if state.epoch == epoch:  # the epoch did not finish (non-finite loss)
                break
            row = state.history[-1]
            if progress_file is not None:
                CellProgress(state.epoch, epochs, start).write(progress_file)
            bar.update()
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row['val_score']:.3f}")
            if on_epoch is not None and not math.isnan(row["val_score"]):
                on_epoch(epoch, row["val_score"])
            writer.check()
            due = time.perf_counter() - last_checkpoint >= plan.runtime.checkpoint_every
            if due and state.epoch < epochs:  # after the last epoch the artefacts follow at once
                writer.submit(state.to_checkpoint(cell_hash, trainer))
                last_checkpoint = time.perf_counter()
