"""The run's data split, each file a typed record with its read and write: the development folds (``splits.json``:
``Splits``) and the locked holdout (``holdout.json``: ``HoldoutRecord``). ``bench.data`` decides the split and
checks a recorded one against the config; these records only hold its format, so the run directory depends on
nothing in ``bench.data``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import atomic
from bench.errors import BenchError
from bench.rundir.guard import read_json_object, require


@dataclass(frozen=True)
class Splits:
    """``splits.json``: each development image's fold, with the dataset fingerprint, k and seed it was made for;
    once written it is the authority every architecture of the run is validated on."""

    fingerprint: str
    k: int
    seed: int
    folds: dict[str, int]  # image id -> fold

    def write(self, path: Path) -> None:
        atomic.write_json(path, {"fingerprint": self.fingerprint, "k": self.k, "seed": self.seed, "folds": self.folds})

    @classmethod
    def read(cls, path: Path) -> Splits:
        raw = read_json_object(path, "splits file")
        require(path, "splits file", raw, ("fingerprint", "k", "seed", "folds"))
        if not isinstance(raw["folds"], dict):
            raise BenchError(f"{path}: not a splits file (its folds are a JSON {type(raw['folds']).__name__}, "
                             "expected an object of image id -> fold)")
        return cls(raw["fingerprint"], raw["k"], raw["seed"], raw["folds"])


@dataclass(frozen=True)
class HoldoutRecord:
    """``holdout.json``: the ids of the locked holdout and the rule that drew them (source, fraction or count,
    seed), so a resumed run holds out the same images or refuses a config that would draw others."""

    rule: dict[str, Any]
    ids: list[str]

    def write(self, path: Path) -> None:
        atomic.write_json(path, {"rule": self.rule, "ids": self.ids})

    @classmethod
    def read(cls, path: Path) -> HoldoutRecord:
        raw = read_json_object(path, "holdout file")
        require(path, "holdout file", raw, ("rule", "ids"))
        if not isinstance(raw["rule"], dict) or not isinstance(raw["ids"], list):
            raise BenchError(f"{path}: not a holdout file (expected a rule object and a list of ids)")
        return cls(raw["rule"], [str(i) for i in raw["ids"]])
