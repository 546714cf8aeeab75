"""The files of the run as a whole, each a typed record with its read and write: the images (``data.npz``,
``holdout.npz``: ``ImageSet``), the holdout predictions (``holdout/*.npz``: ``HoldoutPrediction``), the ensembles
table (``ensembles.csv``: ``Ensembles``), the report's gallery (``gallery.npz``: ``Gallery``), the config as
written (``config.yaml``: ``RunConfig``), the protocol (``protocol.json``: ``ProtocolRecord``), the post-processing
decisions (``postprocess.json``: ``PostprocessDecisions``) and the environment (``env.json``: ``Environment``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bench import atomic
from bench.errors import BenchError
from bench.rundir.guard import read_json_object, reading, require


@dataclass(frozen=True)
class ImageSet:
    """Images with their masks: the development set (``data.npz``, with each image's fold) that every cell trains
    and validates on, or the locked holdout (``holdout.npz``, no folds). Masks are stored bit-packed."""

    ids: np.ndarray
    images: np.ndarray  # (N, 101, 101) uint8
    masks: np.ndarray  # (N, 101, 101) bool
    folds: np.ndarray | None = None

    def write(self, path: Path) -> None:
        folds = {} if self.folds is None else {"folds": self.folds.astype(np.int16)}
        atomic.write_npz(path, ids=np.array(self.ids), images=self.images.astype(np.uint8),
                         masks=np.packbits(self.masks.astype(bool), axis=-1), **folds)

    @classmethod
    def read(cls, path: Path, *, folds: bool) -> ImageSet:
        """The set at ``path``; ``folds``: it must hold each image's fold (the development set)."""
        what = "development set" if folds else "holdout set"
        with reading(path, what), np.load(path, allow_pickle=False) as z:
            require(path, what, z.files, ("ids", "images", "masks", *(("folds",) if folds else ())))
            images = z["images"]
            found = cls(z["ids"], images, np.unpackbits(z["masks"], axis=-1, count=images.shape[-1]).astype(bool),
                        z["folds"] if folds else None)
        sizes = {len(found.ids), len(found.images), len(found.masks), *(() if found.folds is None else (len(found.folds),))}
        if len(sizes) != 1:
            raise BenchError(f"{path}: not a {what} (its arrays hold different numbers of images)")
        return found


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
        remedy = "delete it and run `salt-bench run` again to predict it anew"
        with reading(path, "holdout prediction", remedy), np.load(path, allow_pickle=False) as z:
            require(path, "holdout prediction", z.files, ("ids", "probs", "cell_hashes"))
            found = cls(z["ids"], z["probs"], tuple(str(h) for h in z["cell_hashes"]),
                        z["head_probs"] if "head_probs" in z.files else None)
        if len(found.ids) != len(found.probs):
            raise BenchError(f"{path}: not a holdout prediction ({len(found.ids)} ids, {len(found.probs)} masks); "
                             + remedy)
        return found


@dataclass(frozen=True)
class Ensembles:
    """``ensembles.csv``: ``salt-bench predict --evaluate-oof``'s results, one row per selection (members, TTA), its
    out-of-fold decision and scores before and after post-processing."""

    table: pd.DataFrame

    COLUMNS = ("members", "tta", "threshold", "min_area", "empty_max_prob", "score_raw", "score_post",
               "score_crossfit", "n_images")

    def write(self, path: Path) -> None:
        atomic.write_text(path, self.table.to_csv(index=False))

    @classmethod
    def read(cls, path: Path) -> Ensembles:
        with reading(path, "ensembles table"):  # "" is a missing value only where a row may lack one
            table = pd.read_csv(path, keep_default_na=False, na_values={"empty_max_prob": [""], "score_crossfit": [""]})
        if tuple(table.columns) != cls.COLUMNS:
            raise BenchError(f"{path}: unexpected columns {','.join(map(str, table.columns))}, "
                             f"expected {','.join(cls.COLUMNS)}")
        return cls(table)


@dataclass(frozen=True)
class Gallery:
    """``gallery.npz``: the report's example images (the same for every architecture), why each was chosen, its
    truth, and each architecture's out-of-fold probability levels."""

    ids: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    probs: dict[str, np.ndarray]  # arch -> (n, 101, 101) uint8, in the leaderboard's order

    @classmethod
    def choose(cls, data: ImageSet, ranking: list[str], per_image: pd.DataFrame, probs: dict[str, np.ndarray],
               n_each: int = 2, n_disagree: int = 4) -> Gallery | None:
        """The same validation images for every architecture (``ranking``: the leaderboard's order): best, median
        and worst of the winner, then the images where architectures disagree most (largest spread of per-image
        OOF score, first seed). ``probs``: each architecture's levels for every image of ``data``. None when no
        image was scored by every architecture."""
        seed0 = per_image[per_image["seed"] == per_image["seed"].min()]
        table = seed0.pivot_table(index="id", columns="arch", values="score").dropna()
        if table.empty:
            return None
        order = table[ranking[0]].sort_values(kind="stable")
        mid = len(order) // 2
        chosen = list(dict.fromkeys(
            list(order.index[::-1][:n_each]) + list(order.index[mid : mid + n_each]) + list(order.index[:n_each])
        ))
        labels = ["best"] * n_each + ["median"] * n_each + ["worst"] * n_each
        spread = (table.max(axis=1) - table.min(axis=1)).drop(index=chosen, errors="ignore")
        spread = spread[spread > 0].sort_values(ascending=False, kind="stable")
        disagree = list(spread.index[:n_disagree])
        ids = chosen + disagree
        labels = labels[: len(chosen)] + ["disagree"] * len(disagree)
        index = {str(i): k for k, i in enumerate(data.ids)}
        rows = np.array([index[i] for i in ids])
        return cls(np.array(ids), np.array(labels), data.images[rows], data.masks[rows],
                   {a: probs[a][rows] for a in ranking if a in probs})

    def write(self, path: Path) -> None:
        arrays = {f"probs_{a}": p for a, p in self.probs.items()}
        atomic.write_npz(path, ids=self.ids, labels=self.labels, images=self.images, masks=self.masks,
                         archs=np.array(list(self.probs)), **arrays)

    @classmethod
    def read(cls, path: Path) -> Gallery:
        with reading(path, "gallery"), np.load(path, allow_pickle=False) as z:
            require(path, "gallery", z.files, ("ids", "labels", "images", "masks"))
            found = cls(z["ids"], z["labels"], z["images"], z["masks"],
                        {k[len("probs_"):]: z[k] for k in z.files if k.startswith("probs_")})
        sizes = {len(found.ids), len(found.labels), len(found.images), len(found.masks), *map(len, found.probs.values())}
        if len(sizes) != 1:
            raise BenchError(f"{path}: not a gallery (its arrays hold different numbers of images)")
        return found


@dataclass(frozen=True)
class ProtocolRecord:
    """``protocol.json``: the run's protocol hash and what it covers (``{"data": ..., "protocol": ...}``, from
    ``bench.config.protocol_dict``); a run directory holds one protocol."""

    hash: str
    protocol: dict[str, Any]

    @property
    def shared(self) -> dict[str, Any]:
        """The shared protocol section (folds, seeds, loss, rope, ...)."""
        return self.protocol.get("protocol") or {}

    def write(self, path: Path) -> None:
        atomic.write_json(path, {"hash": self.hash, "protocol": self.protocol})

    @classmethod
    def read(cls, path: Path) -> ProtocolRecord:
        raw = read_json_object(path, "protocol record")
        require(path, "protocol record", raw, ("hash", "protocol"))
        if not isinstance(raw["hash"], str) or not isinstance(raw["protocol"], dict):
            raise BenchError(f"{path}: not a protocol record (expected a hash string and a protocol object)")
        return cls(raw["hash"], raw["protocol"])


@dataclass(frozen=True)
class PostprocessDecisions:
    """``postprocess.json``: ``salt-bench predict``'s decision per selection (its key: members and TTA), with what it
    was decided on (folds, seeds, images, protocol hash)."""

    entries: dict[str, dict[str, Any]]

    def write(self, path: Path) -> None:
        atomic.write_json(path, self.entries)

    @classmethod
    def read(cls, path: Path) -> PostprocessDecisions:
        """The decisions at ``path``; none when there is no file yet."""
        return cls(read_json_object(path, "post-processing record") if path.is_file() else {})


@dataclass(frozen=True)
class RunConfig:
    """``config.yaml``: the run's config as written (every architecture run in it so far); ``RunDir.config`` is the
    typed config read from it."""

    tree: dict[str, Any]

    def write(self, path: Path) -> None:
        atomic.write_text(path, yaml.safe_dump(self.tree, sort_keys=False))

    @classmethod
    def read(cls, path: Path) -> RunConfig:
        from bench import config as bconfig

        return cls(bconfig.read_yaml(path))


@dataclass(frozen=True)
class Environment:
    """``env.json``: what ran the run's latest `salt-bench run` (versions, device, threads, arithmetic, commit,
    time; ``runtime.environment``), rewritten by every run and shown by the report; each cell's own environment is
    in its metrics.json."""

    values: dict[str, Any]

    def write(self, path: Path) -> None:
        atomic.write_json(path, self.values)

    @classmethod
    def read(cls, path: Path) -> Environment:
        return cls(read_json_object(path, "environment record"))
