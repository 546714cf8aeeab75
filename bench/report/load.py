"""Read one run directory into the tables the report shows; the report reads nothing else.

The loader only reads: the leaderboard, per-image scores and gallery must be those of the run's finished cells as
they are now (``bench.results.read_current``). Bringing a stale run up to date is the command's job
(``build.build_report`` aggregates first), never the loader's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import results
from bench.errors import BenchError
from bench.rundir import HISTORY, Cell, Environment, Gallery, History, ProtocolRecord, RunDir, Splits
from bench.rundir.tables import CLASSIFIER, COMPARISON, PAIRS, Aggregate, Table


@dataclass
class RunData:
    """Everything a report section needs, already parsed."""

    run_dir: Path
    name: str
    config: dict[str, Any]  # config.yaml as written
    protocol_record: ProtocolRecord  # protocol.json
    env: dict[str, Any]  # env.json; empty when the run has none
    splits: Splits | None  # splits.json
    cells: pd.DataFrame
    board: pd.DataFrame
    per_image: pd.DataFrame
    history: pd.DataFrame
    gallery: Gallery | None
    missing: list[tuple[str, int, int]] = field(default_factory=list)
    expected: int = 0
    aggregate: Aggregate | None = None  # aggregate.json
    classifier: pd.DataFrame = field(default_factory=pd.DataFrame)  # classifier.csv (runs with the head)
    comparisons: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # compare/<run>.csv, by run name
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # pairs.csv: every compared pair and its verdict

    @property
    def has_cells(self) -> bool:
        return not self.board.empty

    @property
    def baseline(self) -> float | None:
        """The all-empty baseline of the ranking score (``Aggregate.baseline``), None before the run is aggregated."""
        return None if self.aggregate is None else self.aggregate.baseline

    @property
    def oof_images(self) -> pd.DataFrame:
        """Per-image out-of-fold scores (the holdout's rows left out)."""
        if self.per_image.empty or "split" not in self.per_image:
            return self.per_image
        return self.per_image[self.per_image["split"] == "oof"]

    @property
    def model_scores(self) -> pd.DataFrame:
        """The ranked replicates' mean scores (arch, fold, seed, score): one row per trained model on the holdout,
        or per seed's cross-fitted out-of-fold prediction (fold -1) when the ranking is out-of-fold."""
        ranked = [] if self.aggregate is None else self.aggregate.ranked
        if self.per_image.empty or not ranked:
            return pd.DataFrame(columns=["arch", "fold", "seed", "score"])
        if self.aggregate.replicate == "model":
            rows = self.per_image[(self.per_image["split"] == "holdout") & self.per_image["arch"].isin(ranked)]
            return rows.groupby(["arch", "fold", "seed"], as_index=False)["score"].mean()
        rows = self.oof_images[self.oof_images["arch"].isin(ranked)]
        if rows.empty:
            return pd.DataFrame(columns=["arch", "fold", "seed", "score"])
        # as ranked: the seeds every architecture has, on the images every one of those predictions scored
        seeds = set.intersection(*(set(g["seed"]) for _, g in rows.groupby("arch")))
        rows = rows[rows["seed"].isin(seeds)]
        ids = set.intersection(*(set(g["id"]) for _, g in rows.groupby(["arch", "seed"])))
        rows = rows[rows["id"].isin(ids)]
        return rows.groupby(["arch", "seed"], as_index=False)["score"].mean().assign(fold=-1)

    @property
    def protocol(self) -> dict[str, Any]:
        """The shared protocol section (folds, seeds, loss, ...) as recorded in protocol.json."""
        return self.protocol_record.shared

    @property
    def protocol_hash(self) -> str:
        return self.protocol_record.hash

    @property
    def empty_head(self) -> dict[str, Any] | None:
        """``protocol.empty_head`` of the run (weight, dropout), None when the run has no head."""
        return self.protocol.get("empty_head")

    @property
    def switch_epoch(self) -> int | None:
        """The epoch the staged loss switches at, when it has a second stage and every architecture shares it
        (under ``protocol.budget`` each switches at its own scaled epoch)."""
        loss = self.protocol.get("loss") or {}
        return loss.get("switch_epoch") if loss.get("then") and not self.protocol.get("budget") else None


def _read_table(table: Table, path: Path) -> pd.DataFrame:
    return table.read(path) if path.is_file() else pd.DataFrame()


def _cell_key(frame: pd.DataFrame) -> set[tuple[str, int, int]]:
    return {(str(a), int(f), int(s)) for a, f, s in frame[["arch", "fold", "seed"]].drop_duplicates().itertuples(index=False)}


def _histories(run: RunDir, cells: pd.DataFrame) -> pd.DataFrame:
    """Every cell's history.csv, with ``train_pflop``: the training PFLOP spent by the end of each epoch (the
    architecture's mean counted FLOPs per epoch; NaN for cells written before cost was recorded)."""
    per_epoch = {}
    if "train_flops" in cells:
        per_epoch = (cells["train_flops"] / cells["epochs_run"].clip(lower=1) / 1e15).groupby(cells["arch"]).mean()
    frames = []
    for cell in cells.itertuples():
        path = run.cell_dir(Cell(cell.arch, int(cell.fold), int(cell.seed))) / HISTORY
        if path.is_file():
            frame = History.read(path).rows
            flops = (frame["epoch"] + 1) * per_epoch.get(cell.arch, np.nan)
            frames.append(frame.assign(arch=cell.arch, fold=cell.fold, seed=cell.seed, train_pflop=flops))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _gallery(run: RunDir) -> Gallery | None:
    return Gallery.read(run.gallery_file) if run.gallery_file.is_file() else None


def _missing(config: dict[str, Any], proto: dict[str, Any], cells: pd.DataFrame) -> tuple[list[tuple[str, int, int]], int]:
    """Cells of the configured grid without metrics.json, in training order, and the grid size."""
    grid = Cell.grid((config.get("architectures") or {}).keys(), range(int(proto.get("folds", 0))),
                     proto.get("seeds", []))
    done = _cell_key(cells) if not cells.empty else set()
    return [(c.arch, c.fold, c.seed) for c in grid if (c.arch, c.fold, c.seed) not in done], len(grid)


def _tables(run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's current leaderboard and per-image tables; a missing or stale aggregation is a one-line error."""
    tables = results.read_current(run)
    if tables is None:
        raise BenchError(f"{run.aggregate_file}: missing or older than the run's finished cells; "
                         f"`salt-bench report {run.path}` aggregates the run again, then reports")
    return tables


def load_run(run_dir: Path | RunDir) -> RunData:
    """Parse a run directory; a directory that is not a run is a one-line ``BenchError``."""
    run = RunDir(run_dir)
    protocol = run.require_protocol()
    config = run.config_tree()
    cells = run.metrics_table()
    board, per_image = _tables(run) if not cells.empty else (pd.DataFrame(), pd.DataFrame())
    missing, expected = _missing(config, protocol.shared, cells)
    data = RunData(
        run_dir=run.path, name=run.path.resolve().name, config=config, protocol_record=protocol,
        env=Environment.read(run.env_file).values if run.env_file.is_file() else {},
        splits=Splits.read(run.splits_file) if run.splits_file.is_file() else None, cells=cells, board=board,
        per_image=per_image, history=_histories(run, cells) if not cells.empty else pd.DataFrame(),
        gallery=_gallery(run) if not cells.empty else None, missing=missing, expected=expected,
    )
    data.aggregate = Aggregate.read(run.aggregate_file) if run.aggregate_file.is_file() else None
    data.pairs = _read_table(PAIRS, run.pairs_file)
    if data.empty_head and not cells.empty:
        data.classifier = _read_table(CLASSIFIER, run.classifier_file)
        data.comparisons = [(path.stem, _read_table(COMPARISON, path))
                            for path in sorted(run.compare_dir.glob("*.csv"))]
    return data
