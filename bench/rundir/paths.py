"""The run directory's layout and its inverse: ``Cell`` (one unit of work) and ``RunDir`` (every path of a run).

Every other module asks a ``RunDir`` for a path, a cell or a record; none builds a run-directory path itself.
A cell is done exactly when its ``metrics.json`` exists (written last, atomically).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench import atomic
from bench.errors import BenchError
from bench.rundir.cell import METRICS, PROGRESS, CellRecord
from bench.rundir.run import ImageSet, ProtocolRecord, RunConfig

_CELL_NAME = re.compile(r"fold(\d+)-seed(\d+)")


def trial_name(number: int | str) -> str:
    """A trial's folder in its study's folder (``RunDir.study_dir``)."""
    return f"trial-{number}"


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

    @classmethod
    def grid(cls, archs: Iterable[str], folds: Iterable[int], seeds: Iterable[int]) -> list[Cell]:
        """Every cell of ``archs`` x ``folds`` x ``seeds`` in training order (seed, then fold, then architecture,
        so each seed's models finish together): the one enumeration that run, tune, predict and the report share."""
        archs, folds = list(archs), list(folds)
        return [cls(a, f, s) for s in seeds for f in folds for a in archs]


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

    def study_db(self, study: str) -> Path:
        """The study's Optuna SQLite file, when ``salt-bench tune`` is given no ``--storage``."""
        return self.tuning_dir / f"{study}.db"

    def study_dbs(self) -> list[Path]:
        """Every SQLite file under ``tuning/`` (another storage's studies may have been copied in), sorted."""
        return sorted(self.tuning_dir.rglob("*.db")) if self.tuning_dir.is_dir() else []

    def study_best_file(self, study: str) -> Path:
        """``<study>.best.yaml``: the best trial's section as a config layer."""
        return self.tuning_dir / f"{study}.best.yaml"

    def study_dir(self, study: str) -> Path:
        """The study's trials: ``trial-<n>/<cell>/`` each (``trial_name``)."""
        return self.tuning_dir / study

    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files of killed writers (``atomic.remove_stale_temps``) from every folder of the
        run that files are written into, one by one: never a walk, never a folder outside the run."""
        root = self.path.resolve()
        folders = [self.path, self.holdout_dir, self.compare_dir, self.tuning_dir, *self.cells_dir.glob("*/*"),
                   *self.imagesets_dir.glob("fold*"), *self.tuning_dir.glob(f"*/{trial_name('*')}/*")]
        return [tmp for folder in folders if folder.resolve().is_relative_to(root)
                for tmp in atomic.remove_stale_temps(folder)]

    # cells
    def cell_dir(self, cell: Cell) -> Path:
        return self.cells_dir / cell.arch / cell.name

    def claim_file(self, cell: Cell) -> Path:
        """Held by the process training ``cell`` (``bench.executors.claim``)."""
        return self.cell_dir(cell) / "claim"

    def progress_file(self, cell: Cell) -> Path:
        """Written by the training of ``cell`` after each epoch (``CellProgress``), for the run's progress lines."""
        return self.cell_dir(cell) / PROGRESS

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

    def cell_metrics(self, cell: Cell) -> CellRecord:
        return CellRecord.read(self.cell_dir(cell) / METRICS)

    def metrics_table(self) -> pd.DataFrame:
        """One row per finished cell (its metrics.json), in the order of ``done_cells``."""
        cells = sorted(self.done_cells(), key=lambda c: str(self.cell_dir(c)))
        return pd.DataFrame([self.cell_metrics(c).to_dict() for c in cells])

    # the run's own records
    def protocol(self) -> ProtocolRecord | None:
        """``protocol.json``, None before the first run."""
        return ProtocolRecord.read(self.protocol_file) if self.protocol_file.is_file() else None

    def require_protocol(self) -> ProtocolRecord:
        """``protocol.json`` of a run that must already exist (``report``, ``compare``): a path that is no run
        directory is a one-line error."""
        if not self.path.is_dir():
            raise BenchError(f"{self}: no such run directory")
        if not self.protocol_file.is_file():
            raise BenchError(f"{self}: not a salt-bench run directory (no protocol.json)")
        return ProtocolRecord.read(self.protocol_file)

    def protocol_hash(self) -> str | None:
        record = self.protocol()
        return None if record is None else record.hash

    def config(self) -> Any:
        """The run's typed config (``config.yaml``); a directory without one is a one-line error."""
        from bench import config as bconfig

        if not self.config_file.is_file():
            raise BenchError(f"{self.config_file}: missing; {self.path} is not a run directory (made by `salt-bench run`)")
        return bconfig.load([self.config_file])

    def config_tree(self) -> dict[str, Any]:
        """``config.yaml`` as written, {} before the first run."""
        return RunConfig.read(self.config_file).tree if self.config_file.is_file() else {}

    def load_data(self) -> ImageSet:
        """The development set: ids, images, masks and folds (never the holdout)."""
        return ImageSet.read(self.data_file, folds=True)

    def load_holdout(self) -> ImageSet:
        """The locked holdout; only ``bench.holdout`` and the final aggregation call this."""
        return ImageSet.read(self.holdout_data_file, folds=False)
