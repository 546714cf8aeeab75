"""What the aggregation leaves in the run directory and its readers read: ``aggregate.json`` (``Aggregate``) and
the CSV tables (``Table``: ``LEADERBOARD``, ``PER_IMAGE``, ``PAIRS``, ``CLASSIFIER``, ``COMPARISON``), each read
with the same CSV options and its own column types, so no reader turns an id such as "NA" into a missing value or
a decision such as "0.50" into a float."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import atomic
from bench.rundir.guard import read_json_object, reading, require

CSV_OPTIONS: dict[str, Any] = {"keep_default_na": False, "na_values": [""]}  # an id such as "NA" or "1e5" stays a string


@dataclass(frozen=True)
class Table:
    """One CSV table of the run: what it holds (for errors) and the columns read as strings."""

    what: str
    dtypes: dict[str, type]

    def write(self, path: Path, frame: pd.DataFrame) -> str:
        """Write ``frame`` atomically; the text written (the aggregation records its digest)."""
        text = frame.to_csv(index=False)
        atomic.write_text(path, text)
        return text

    def read(self, path: Path) -> pd.DataFrame:
        """The table at ``path``; an unreadable file is a one-line error naming it."""
        with reading(path, self.what):
            return pd.read_csv(path, dtype=self.dtypes, **CSV_OPTIONS)


#: the per-seed decisions and labels a leaderboard shows as written (``"0.50 0.45"``, ``"off"``)
DECISION_DTYPES: dict[str, type] = {c: str for c in ("threshold", "min_area", "empty_max_prob", "head_cut", "verdict",
                                                     "recipe", "tuned")}
LEADERBOARD = Table("leaderboard", {"arch": str, "encoder": str, **DECISION_DTYPES})
PER_IMAGE = Table("per-image scores", {"id": str, "arch": str})
PAIRS = Table("pairwise verdicts", {"arch": str, "other": str, "verdict": str})
CLASSIFIER = Table("classifier table", {"arch": str, "split": str, "fold_head_cuts": str})
COMPARISON = Table("comparison table", {"arch": str, "split": str, "differences": str, "verdict": str})


@dataclass(frozen=True)
class Aggregate:
    """``aggregate.json``, written last by ``results.aggregate``: how the leaderboard was ranked (source, replicate,
    counts, ROPE, alpha, variance components per architecture), the cells and cell hashes it was built from and the
    digests of the tables beside it (``results.read_current`` trusts the tables only while both match)."""

    score_source: str  # "holdout" or "oof"
    replicate: str  # "model" (each trained model on the holdout) or each seed's cross-fitted OOF prediction
    n_ranked_images: int
    n_models: int
    n_seeds: int
    rope: float
    alpha: float
    seeds_to_resolve: int | None
    ranked: list[str]
    incomplete: dict[str, str]  # arch -> what keeps it out of the ranking
    variance: dict[str, dict[str, Any]]  # arch -> n_models, collapsed and the variance components
    cells: dict[str, str]  # "arch/fold<k>-seed<s>" -> cell hash
    tables: dict[str, str]  # file name -> sha256 of its text
    environments: list[dict[str, Any]]
    mixed_environments: bool
    all_empty_oof: float
    all_empty_holdout: float | None

    def write(self, path: Path) -> None:
        atomic.write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> Aggregate:
        raw = read_json_object(path, "aggregate record")
        names = [f.name for f in dataclasses.fields(cls)]
        require(path, "aggregate record", raw, names)
        return cls(**{k: raw[k] for k in names})

    @property
    def baseline(self) -> float | None:
        """The TGS score of predicting every mask empty on the images the ranking score is computed on (the holdout
        when there is one): the floor any learned model must clear."""
        return self.all_empty_holdout if self.score_source == "holdout" else self.all_empty_oof
