"""The run directory: its layout and its inverse, in one place.

```
<run>/config.yaml  protocol.json  splits.json  env.json  data.npz  ImageSets/
<run>/cells/<arch>/fold<k>-seed<s>/  metrics.json  history.csv  oof.npz  model.pt  checkpoint.pt
<run>/leaderboard.csv  per_image.csv  pairs.csv  gallery.npz  postprocess.json  ensembles.csv  submission.csv
<run>/report.html  holdout/<arch>-seed<s>.npz (fold ensembles)  holdout/<arch>-fold<k>-seed<s>.npz (each model)
<run>/classifier.csv  (runs with protocol.empty_head)  compare/<other run>.csv  (salt-bench compare)
<run>/tuning/<study>.db  <study>.best.yaml  <study>/trial-<n>/<cell>/
```

Every other module asks a ``RunDir`` for a path, a cell or a table; none builds a run-directory path itself.
A cell is done exactly when its ``metrics.json`` exists (written last, atomically).
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import atomic
from bench.errors import BenchError

METRICS, HISTORY, OOF, MODEL, CHECKPOINT = "metrics.json", "history.csv", "oof.npz", "model.pt", "checkpoint.pt"
_CELL_NAME = re.compile(r"fold(\d+)-seed(\d+)")


@dataclass(frozen=True, order=True)
class Cell:
    """One unit of work: an architecture trained on one fold with one seed."""

    arch: str
    fold: int
    seed: int

    @property
    def name(self) -> str:
        return f"fold{self.fold}-seed{self.seed}"

    @classmethod
    def parse(cls, arch: str, name: str) -> Cell | None:
        """The inverse of ``name``; None for a folder that is not a cell."""
        m = _CELL_NAME.fullmatch(name)
        return cls(arch, int(m.group(1)), int(m.group(2))) if m else None


class RunDir:
    """A run directory on disk (it need not exist yet)."""

    def __init__(self, path: str | Path | RunDir):
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # files of the run
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def protocol_file(self) -> Path:
        return self.path / "protocol.json"

    @property
    def splits_file(self) -> Path:
        return self.path / "splits.json"

    @property
    def holdout_file(self) -> Path:
        """``holdout.json``: which images are held out, and by which rule."""
        return self.path / "holdout.json"

    @property
    def holdout_data_file(self) -> Path:
        """``holdout.npz``: the holdout's images and masks, read only by the final scoring."""
        return self.path / "holdout.npz"

    def holdout_probs_file(self, arch: str, seed: int) -> Path:
        """One architecture's fold ensemble on the holdout, for one seed (uint8 probability levels)."""
        return self.holdout_dir / f"{arch}-seed{seed}.npz"

    @property
    def holdout_dir(self) -> Path:
        return self.path / "holdout"

    def holdout_model_file(self, cell: Cell) -> Path:
        """One trained model's own prediction of the holdout (a replicate of the verdict)."""
        return self.holdout_dir / f"{cell.arch}-{cell.name}.npz"

    @property
    def pairs_file(self) -> Path:
        """``pairs.csv``: every pair of compared architectures, its difference and verdict (``bench.stats``)."""
        return self.path / "pairs.csv"

    @property
    def env_file(self) -> Path:
        return self.path / "env.json"

    @property
    def data_file(self) -> Path:
        return self.path / "data.npz"

    @property
    def imagesets_dir(self) -> Path:
        return self.path / "ImageSets"

    @property
    def leaderboard_file(self) -> Path:
        return self.path / "leaderboard.csv"

    @property
    def per_image_file(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def aggregate_file(self) -> Path:
        """``aggregate.json``, written last by the aggregation: the tables beside it are complete and current."""
        return self.path / "aggregate.json"

    @property
    def classifier_file(self) -> Path:
        """``classifier.csv``: the empty-vs-salt head per (arch, seed, split), in runs with ``protocol.empty_head``."""
        return self.path / "classifier.csv"

    def compare_file(self, other: RunDir) -> Path:
        """``salt-bench compare OTHER THIS``'s table: this run's per-image scores paired with ``other``'s."""
        return self.compare_dir / f"{other.path.resolve().name}.csv"

    @property
    def compare_dir(self) -> Path:
        return self.path / "compare"

    @property
    def gallery_file(self) -> Path:
        return self.path / "gallery.npz"

    @property
    def postprocess_file(self) -> Path:
        return self.path / "postprocess.json"

    @property
    def ensembles_file(self) -> Path:
        return self.path / "ensembles.csv"

    @property
    def submission_file(self) -> Path:
        return self.path / "submission.csv"

    @property
    def report_file(self) -> Path:
        """``salt-bench report``'s default: inside the run, so two runs' reports never share a path."""
        return self.path / "report.html"

    @property
    def tuning_dir(self) -> Path:
        return self.path / "tuning"

    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files of killed writers (``atomic.remove_stale_temps``) from every folder of the
        run that files are written into, one by one: never a walk, never a folder outside the run."""
        root = self.path.resolve()
        folders = [self.path, self.holdout_dir, self.compare_dir, self.tuning_dir, *self.cells_dir.glob("*/*"),
                   *self.imagesets_dir.glob("fold*"), *self.tuning_dir.glob("*/trial-*/*")]
        return [tmp for folder in folders if folder.resolve().is_relative_to(root)
                for tmp in atomic.remove_stale_temps(folder)]

    # cells
    def cell_dir(self, cell: Cell) -> Path:
        return self.cells_dir / cell.arch / cell.name

    def claim_file(self, cell: Cell) -> Path:
        """Held by the process training ``cell`` (``bench.executors.claim``)."""
        return self.cell_dir(cell) / "claim"

    def is_done(self, cell: Cell) -> bool:
        return (self.cell_dir(cell) / METRICS).is_file()

    def done_cells(self) -> list[Cell]:
        """Every finished cell, sorted (arch, fold, seed)."""
        found = []
        for metrics in self.cells_dir.glob(f"*/*/{METRICS}"):
            cell = Cell.parse(metrics.parent.parent.name, metrics.parent.name)
            if cell is not None and metrics.is_file():
                found.append(cell)
        return sorted(found)

    def trained_archs(self) -> list[str]:
        return sorted(p.name for p in self.cells_dir.glob("*") if p.is_dir())

    def cell_metrics(self, cell: Cell) -> dict[str, Any]:
        return atomic.read_json(self.cell_dir(cell) / METRICS)

    def metrics_table(self) -> pd.DataFrame:
        """One row per finished cell (its metrics.json), in the order of ``done_cells``."""
        cells = sorted(self.done_cells(), key=lambda c: str(self.cell_dir(c)))
        return pd.DataFrame([self.cell_metrics(c) for c in cells])

    def newest_cell_mtime(self) -> float:
        return max((self.cell_dir(c) / METRICS).stat().st_mtime for c in self.done_cells())

    # the run's own records
    def protocol(self) -> dict[str, Any]:
        """``protocol.json``: ``{"hash": ..., "protocol": {"data": ..., "protocol": ...}}``, or {} before the first run."""
        return atomic.read_json(self.protocol_file) if self.protocol_file.is_file() else {}

    def protocol_hash(self) -> str | None:
        return self.protocol().get("hash")

    def config(self) -> Any:
        """The run's typed config (``config.yaml``); a directory without one is a one-line error."""
        from bench import config as bconfig

        if not self.config_file.is_file():
            raise BenchError(f"{self.config_file}: missing; {self.path} is not a run directory (made by `salt-bench run`)")
        return bconfig.load([self.config_file])

    def save_data(self, ids: list[str], images: np.ndarray, masks: np.ndarray, folds: np.ndarray) -> None:
        """The train images, masks and folds every cell of the run reads (Ray workers and the report too)."""
        atomic.write_npz(self.data_file, ids=np.array(ids), images=images.astype(np.uint8),
                         masks=np.packbits(masks.astype(bool), axis=-1), folds=folds.astype(np.int16))

    def load_data(self) -> dict[str, np.ndarray]:
        """The development set: ids, images, masks and folds (never the holdout)."""
        return _load_images(self.data_file, folds=True)

    def save_holdout(self, ids: list[str], images: np.ndarray, masks: np.ndarray) -> None:
        atomic.write_npz(self.holdout_data_file, ids=np.array(ids), images=images.astype(np.uint8),
                         masks=np.packbits(masks.astype(bool), axis=-1))

    def load_holdout(self) -> dict[str, np.ndarray]:
        """The locked holdout; only ``bench.holdout`` and the final aggregation call this."""
        return _load_images(self.holdout_data_file, folds=False)


@dataclass(frozen=True)
class HoldoutPrediction:
    """A holdout prediction on disk: uint8 probability levels per image, the head's probabilities when the models
    have the head, and the cell hashes of the models behind it (one for a model, the folds' for an ensemble)."""

    ids: np.ndarray
    probs: np.ndarray
    cell_hashes: tuple[str, ...]
    head_probs: np.ndarray | None = None

    def write(self, path: Path) -> None:
        head = {} if self.head_probs is None else {"head_probs": self.head_probs.astype(np.float32)}
        atomic.write_npz(path, ids=self.ids, probs=self.probs, cell_hashes=np.array(self.cell_hashes), **head)

    @classmethod
    def read(cls, path: Path) -> HoldoutPrediction | None:
        """The prediction at ``path``; None when there is none; an unreadable file is a one-line error."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["ids"], z["probs"], tuple(str(h) for h in z["cell_hashes"]),
                           z["head_probs"] if "head_probs" in z.files else None)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise BenchError(f"{path}: unreadable holdout prediction ({type(exc).__name__}); delete it and run "
                             "`salt-bench run` again to predict it anew") from None


def _load_images(path: Path, *, folds: bool) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BenchError(f"{path}: missing; the run directory is incomplete")
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            out = {"ids": z["ids"], "images": images,
                   "masks": np.unpackbits(z["masks"], axis=-1, count=images.shape[-1]).astype(bool)}
            if folds:
                out["folds"] = z["folds"]
            return out
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
