"""Read one run directory into the tables the report shows; the report reads nothing else.

The leaderboard, per-image scores and gallery are taken from the run directory when they are at least
as new as every finished cell, and rebuilt with ``bench.results.aggregate`` otherwise (a report of a
partial or resumed run is never stale).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bench import results
from bench.errors import BenchError
from bench.report.stats import fold_ratio

_CSV = {"keep_default_na": False, "na_values": [""]}  # an id such as "NA" or "1e5" stays a string


@dataclass
class RunData:
    """Everything a report section needs, already parsed."""

    run_dir: Path
    name: str
    config: dict[str, Any]
    protocol: dict[str, Any]
    env: dict[str, Any]
    splits: dict[str, Any]
    cells: pd.DataFrame
    board: pd.DataFrame
    per_image: pd.DataFrame
    history: pd.DataFrame
    gallery: dict[str, np.ndarray] | None
    missing: list[tuple[str, int, int]] = field(default_factory=list)
    expected: int = 0
    baseline: float | None = None
    test_train_ratio: float = float("nan")

    @property
    def has_cells(self) -> bool:
        return not self.board.empty


def _read_json(path: Path, required: bool = False) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise BenchError(f"{path}: missing")
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: unreadable JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise BenchError(f"{path}: expected a JSON object")
    return value


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BenchError(f"{path}: unreadable YAML ({type(exc).__name__})") from None
    return value if isinstance(value, dict) else {}


def _cell_key(frame: pd.DataFrame) -> set[tuple[str, int, int]]:
    return {(str(a), int(f), int(s)) for a, f, s in frame[["arch", "fold", "seed"]].drop_duplicates().itertuples(index=False)}


def _fresh(run_dir: Path, cells: pd.DataFrame) -> bool:
    """True when leaderboard.csv and per_image.csv were written after the last cell and cover exactly its cells."""
    board, per_image = run_dir / "leaderboard.csv", run_dir / "per_image.csv"
    if not (board.is_file() and per_image.is_file()):
        return False
    newest = max(p.stat().st_mtime for p in run_dir.glob("cells/*/fold*-seed*/metrics.json"))
    if min(board.stat().st_mtime, per_image.stat().st_mtime) < newest:
        return False
    images = pd.read_csv(per_image, usecols=["arch", "fold", "seed"])
    return _cell_key(images) == _cell_key(cells)


def _tables(run_dir: Path, cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if cells.empty:
        return pd.DataFrame(), pd.DataFrame()
    if not (run_dir / "data.npz").is_file():
        raise BenchError(f"{run_dir / 'data.npz'}: missing, but the run has finished cells")
    if _fresh(run_dir, cells):
        board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"arch": str, "encoder": str}, **_CSV)
        per_image = pd.read_csv(run_dir / "per_image.csv", dtype={"id": str, "arch": str}, **_CSV)
        return board, per_image
    return results.aggregate(run_dir)


def _histories(run_dir: Path, cells: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for cell in cells.itertuples():
        path = run_dir / "cells" / cell.arch / f"fold{cell.fold}-seed{cell.seed}" / "history.csv"
        if path.is_file():
            frame = pd.read_csv(path)
            frames.append(frame.assign(arch=cell.arch, fold=cell.fold, seed=cell.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _gallery(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = run_dir / "gallery.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _missing(config: dict[str, Any], protocol: dict[str, Any], cells: pd.DataFrame) -> tuple[list[tuple[str, int, int]], int]:
    """Cells of the configured grid without metrics.json, and the grid size."""
    proto = (protocol.get("protocol") or {}).get("protocol") or {}
    archs = list((config.get("architectures") or {}).keys())
    grid = [(a, f, s) for a in archs for f in range(int(proto.get("folds", 0))) for s in proto.get("seeds", [])]
    done = _cell_key(cells) if not cells.empty else set()
    return [c for c in grid if c not in done], len(grid)


def load_run(run_dir: Path) -> RunData:
    """Parse a run directory; a directory that is not a run is a one-line ``BenchError``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"{run_dir}: no such run directory")
    if not (run_dir / "protocol.json").is_file():
        raise BenchError(f"{run_dir}: not a salt-bench run directory (no protocol.json)")
    protocol = _read_json(run_dir / "protocol.json", required=True)
    config = _read_config(run_dir / "config.yaml")
    splits = _read_json(run_dir / "splits.json")
    splits.pop("folds", None)
    cells = results.cell_metrics(run_dir)
    board, per_image = _tables(run_dir, cells)
    missing, expected = _missing(config, protocol, cells)
    run = RunData(
        run_dir=run_dir, name=run_dir.resolve().name, config=config, protocol=protocol,
        env=_read_json(run_dir / "env.json"), splits=splits, cells=cells, board=board, per_image=per_image,
        history=_histories(run_dir, cells) if not cells.empty else pd.DataFrame(),
        gallery=_gallery(run_dir) if not cells.empty else None, missing=missing, expected=expected,
    )
    if (run_dir / "data.npz").is_file():
        run.baseline = results.all_empty_baseline(run_dir)
        run.test_train_ratio = fold_ratio(results.load_data(run_dir)["folds"])
    return run
