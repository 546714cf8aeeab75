"""The files of one cell (``cells/<arch>/fold<k>-seed<s>/``), each a typed record with its read and write:
``metrics.json`` (``CellRecord``), ``oof.npz`` (``OofPrediction``), ``history.csv`` (``History``) and the kept
weights ``model.pt`` (``read_weights``/``write_weights``). The resume checkpoint is ``bench.checkpoint``'s.
``progress.json`` (``CellProgress``) exists only while the cell trains: it is for a person watching, never a result."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench import atomic
from bench.checkpoint import to_bytes
from bench.errors import BenchError
from bench.rundir.guard import read_json_object, reading, require

METRICS, HISTORY, OOF, MODEL, CHECKPOINT = "metrics.json", "history.csv", "oof.npz", "model.pt", "checkpoint.pt"
PROGRESS = "progress.json"


@dataclass(frozen=True)
class CellRecord:
    """``metrics.json``: what the cell is, what it kept, how it went and what it cost. Written last: its presence
    marks the cell done. The fields after ``wall_s`` are absent from cells written before cost was recorded and
    from cells without the empty-vs-salt head."""

    arch: str
    fold: int
    seed: int
    protocol_hash: str
    cell_hash: str
    identity: dict[str, Any]  # bench.identity.cell_identity: everything the cell hash covers
    recipe: str
    tuned: str | None
    status: str  # "ok" or "diverged"
    stop_reason: str
    arch_kwargs: dict[str, Any]  # the model options (architectures.create's keyword arguments)
    arch_train: dict[str, Any]  # architectures.<arch>.train as written; {} = the shared recipe
    encoder: str
    params: int
    macs: float
    output_stride: int | None
    checkpoint: str
    kept_epochs: dict[str, Any]
    epochs_run: int
    val_score: float
    train_images_per_s: float
    infer_images_per_s: float
    peak_mem_mb: float | None
    device: str
    device_name: str
    dtype: str
    n_train: int
    n_val: int
    wall_s: float
    epochs: int | None = None
    train_flops: float | None = None
    infer_flops: float | None = None
    train_s: float | None = None
    infer_ms: float | None = None
    head_accuracy: float | None = None
    head_roc_auc: float | None = None

    @classmethod
    def read(cls, path: Path) -> CellRecord:
        """The record at ``path``; an unreadable file, or one that is not a cell record, is a one-line error."""
        raw = read_json_object(path, "cell record")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        require(path, "cell record", raw, [n for n, f in fields.items() if f.default is dataclasses.MISSING])
        for name, f in fields.items():
            if name in raw and not _fits(raw[name], str(f.type)):
                raise BenchError(f"{path}: not a cell record ({name} is {type(raw[name]).__name__} {raw[name]!r}, "
                                 f"expected {f.type})")
        return cls(**{k: v for k, v in raw.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        """The record as written: the optional fields only when they hold a value."""
        optional = {f.name for f in dataclasses.fields(self) if f.default is None}
        return {k: v for k, v in dataclasses.asdict(self).items() if not (k in optional and v is None)}

    def write(self, path: Path) -> None:
        atomic.write_json(path, self.to_dict())


_NUMBER = (int, float, np.integer, np.floating)
_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int, np.integer), "float": _NUMBER, "dict": (dict,)}


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated ``annotation`` (``str``, ``int | None``, ``dict[str, Any]``...)."""
    kinds = [a.strip().split("[")[0] for a in annotation.split("|")]
    if value is None:
        return "None" in kinds
    return not isinstance(value, bool) and any(isinstance(value, _TYPES[k]) for k in kinds if k in _TYPES)


@dataclass(frozen=True)
class OofPrediction:
    """``oof.npz``: the cell's out-of-fold prediction of its validation images by the weights it keeps, as uint8
    probability levels with and without flip TTA, and the head's probabilities (float32) in cells with the head."""

    ids: np.ndarray
    probs: np.ndarray
    probs_no_tta: np.ndarray
    head_probs: np.ndarray | None = None
    head_probs_no_tta: np.ndarray | None = None

    def write(self, path: Path) -> None:
        head = {} if self.head_probs is None else {"head_probs": self.head_probs, "head_probs_no_tta": self.head_probs_no_tta}
        atomic.write_npz(path, ids=self.ids, probs=self.probs, probs_no_tta=self.probs_no_tta, **head)

    @classmethod
    def read(cls, path: Path) -> OofPrediction:
        with reading(path, "out-of-fold prediction"), np.load(path, allow_pickle=False) as z:
            require(path, "out-of-fold prediction", z.files, ("ids", "probs", "probs_no_tta"))
            head = {k: z[k] for k in ("head_probs", "head_probs_no_tta") if k in z.files}
            found = cls(z["ids"], z["probs"], z["probs_no_tta"], **head)
        if not len(found.ids) == len(found.probs) == len(found.probs_no_tta):
            raise BenchError(f"{path}: not an out-of-fold prediction ({len(found.ids)} ids, {len(found.probs)} masks)")
        return found

    def select(self, tta: bool, head: bool) -> np.ndarray | None:
        """The masks' (or the head's) probabilities with or without flip TTA; None for the head of a cell without it."""
        if head:
            return self.head_probs if tta else self.head_probs_no_tta
        return self.probs if tta else self.probs_no_tta


@dataclass(frozen=True)
class History:
    """``history.csv``: one row per epoch. No wall times (they are in ``metrics.json``): a history is a function of
    the cell's identity alone."""

    rows: pd.DataFrame

    COLUMNS = ("epoch", "lr", "train_loss", "val_score", "val_iou", "val_score_a", "val_score_b")
    _NUMERIC = ("epoch", "train_loss", "val_score")  # what the report draws, in every history ever written

    @classmethod
    def of(cls, epochs: list[dict[str, Any]]) -> History:
        return cls(pd.DataFrame(epochs, columns=list(cls.COLUMNS)))

    def write(self, path: Path) -> None:
        atomic.write_text(path, self.rows.to_csv(index=False))

    @classmethod
    def read(cls, path: Path) -> History:
        with reading(path, "training history"):
            rows = pd.read_csv(path)
        require(path, "training history", rows.columns, cls._NUMERIC)
        wrong = [c for c in cls._NUMERIC if not pd.api.types.is_numeric_dtype(rows[c])]
        if wrong:
            raise BenchError(f"{path}: not a training history (column {wrong[0]!r} is not numeric)")
        return cls(rows)


@dataclass(frozen=True)
class CellProgress:
    """``progress.json``: how far a training cell is, rewritten after every epoch and deleted before its artefacts
    are written, so a finished cell never has one. ``start`` is the epoch this process resumed from (0 for a fresh
    cell), so a watcher counts only the epochs trained now. Advisory: no result, identity or report reads it."""

    epoch: int  # epochs finished
    epochs: int  # epochs the cell trains
    start: int

    def write(self, path: Path) -> None:
        atomic.write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> CellProgress | None:
        """The progress at ``path``, or None while there is none to read (not started, finished meanwhile, or a
        foreign file): a watcher then shows no epoch, and training is never stopped by it."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            found = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return found if all(isinstance(v, int) and not isinstance(v, bool) for v in dataclasses.astuple(found)) else None


def write_weights(path: Path, state: dict[str, Any]) -> None:
    """``model.pt``: the kept weights as a state dict (tensors only, so they load with ``weights_only``)."""
    atomic.write_bytes(path, to_bytes(state))


def read_weights(path: Path) -> dict[str, Any]:
    """``model.pt``'s state dict, on the CPU; a truncated or foreign file is a one-line error."""
    with reading(path, "model weights"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{path}: not model weights (expected a state dict of tensors)")
    return state
