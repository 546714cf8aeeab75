"""The cell's kept out-of-fold prediction (``finish``), and a finished cell's model rebuilt (``load_model``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import architectures
from bench import rundir, runtime
from bench.cell.data import DeviceData, FoldSplit
from bench.cell.loop import BY_FOLD, BY_HALF_A, BY_HALF_B, CellState
from bench.cell.trainer import Trainer
from bench.checkpoint import snapshot
from bench.errors import BenchError, summary
from bench.inference import predict_outputs, quantise
from bench.rundir import CellRecord


@dataclass
class KeptPrediction:
    """The cell's out-of-fold prediction by the weights it keeps, as uint8 probability levels, and the head's
    probability per image (float32; ``None`` without the head), each with and without flip TTA."""

    status: str
    oof_tta: np.ndarray
    oof_plain: np.ndarray
    oof_head: np.ndarray | None
    oof_head_plain: np.ndarray | None
    infer_images_per_s: float
    kept_epochs: dict[str, int]  # which epoch predicted which validation images
    val_score: float  # the kept prediction's validation TGS score at 0.5, no TTA
    model_state: dict[str, torch.Tensor] | None  # model.pt: the weights the holdout ensemble uses


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _head_array(head: torch.Tensor | None) -> np.ndarray | None:
    return None if head is None else head.cpu().numpy().astype(np.float32)


def _predict(trainer: Trainer, data: DeviceData, split: FoldSplit) -> tuple[
        np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    """(masks TTA, masks plain, head TTA, head plain, TTA images/s) of the fold's validation images."""
    p, dtype = trainer.protocol, trainer.arithmetic
    tta = predict_outputs(trainer.model, split.val_images, p.input, data.mean, data.std, dtype, tta=True)
    plain = predict_outputs(trainer.model, split.val_images, p.input, data.mean, data.std, dtype, tta=False)
    return quantise(tta.masks), quantise(plain.masks), _head_array(tta.head), _head_array(plain.head), tta.images_per_s


def finish(trainer: Trainer, data: DeviceData, split: FoldSplit, state: CellState) -> KeptPrediction:
    """Predict the fold's validation images with the kept weights (with and without flip TTA).

    ``final``: the weights of the last epoch. ``crossfit``: half A by the epoch chosen on half B and half B
    by the epoch chosen on half A, so no validation image is scored by an epoch selected on it.
    """
    if state.diverged or not state.history:  # the cell predicts nothing, which the leaderboard scores honestly
        empty = np.zeros((len(split.val_idx), *trainer.size), np.uint8)
        head = None if trainer.head_weight is None else np.zeros(len(split.val_idx), np.float32)
        return KeptPrediction("diverged", empty, empty, head, head, float("nan"), {}, float("nan"), None)
    if trainer.protocol.checkpoint == "final":
        tta, plain, head, head_plain, ips = _predict(trainer, data, split)
        last = state.history[-1]
        return KeptPrediction("ok", tta, plain, head, head_plain, ips, {"all": last["epoch"]}, last["val_score"],
                              _cpu_state(trainer.model))
    by_a, by_b = (_predict_kept(trainer, data, split, state, key) for key in (BY_HALF_A, BY_HALF_B))
    half_a = split.half_a[:, None, None]  # half A is predicted by the epoch chosen on half B, and the other way
    tta = np.where(half_a, by_b[0], by_a[0])
    plain = np.where(half_a, by_b[1], by_a[1])
    head, head_plain = (None, None) if by_a[2] is None else (
        np.where(split.half_a, by_b[2], by_a[2]), np.where(split.half_a, by_b[3], by_a[3]))
    rows = {r["epoch"]: r for r in state.history}
    ea, eb = state.kept[BY_HALF_A]["epoch"], state.kept[BY_HALF_B]["epoch"]
    n_a, n_b = int(split.half_a.sum()), int((~split.half_a).sum())
    val_score = (n_a * rows[eb]["val_score_a"] + n_b * rows[ea]["val_score_b"]) / max(n_a + n_b, 1)
    kept = {"half_a_by": eb, "half_b_by": ea, "model_pt": state.kept[BY_FOLD]["epoch"]}
    return KeptPrediction("ok", tta, plain, head, head_plain, by_a[4], kept, val_score,
                          snapshot(state.kept[BY_FOLD]["state"]))


def _predict_kept(trainer: Trainer, data: DeviceData, split: FoldSplit, state: CellState, key: str) -> tuple[
        np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    """``_predict`` with the weights kept under ``key`` (one of ``KEPT_BY``) loaded."""
    trainer.model.load_state_dict(state.kept[key]["state"])
    return _predict(trainer, data, split)


def load_model(cell_dir: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild a cell's model from its metrics.json and load its kept weights (state dict only), prepared as the
    cell's training prepared it on ``device`` (``runtime.prepare_model``: channels_last, and the deterministic
    kernels of a ``runtime.deterministic`` cell on CUDA), so its predictions run the kernels its out-of-fold
    predictions ran."""
    record = CellRecord.read(Path(cell_dir) / rundir.METRICS)
    weights = Path(cell_dir) / rundir.MODEL
    model = architectures.create(record.arch, in_channels=1, classes=1, **record.arch_kwargs)
    try:
        model.load_state_dict(rundir.read_weights(weights))
    except RuntimeError as exc:  # weights of another model: missing or unexpected keys, other shapes
        raise BenchError(f"{weights}: not the weights of {record.arch} with {record.arch_kwargs} "
                         f"({summary(exc, 200)})") from None
    return runtime.prepare_model(model, device, record.identity.get("deterministic")).eval()
