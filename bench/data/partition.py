"""From the configured data to what a run trains, validates and finally scores on.

The loaded images are split once into the *development* set (K coverage-stratified folds, ``splits.json``)
and the locked *holdout* (``holdout.json``): for a data folder a coverage-stratified fraction of train
(``data.holdout``), for the synthetic source ``data.n_holdout`` extra generated images. Both splits are
recorded in the run directory and reused on resume; the development fingerprint in ``splits.json`` covers
only development images, so nothing recorded about the folds depends on a holdout mask.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import cost
from bench.config import Config
from bench.data import folds as bfolds
from bench.data import source
from bench.errors import BenchError, one_line
from bench.rundir import HoldoutRecord, ImageSet


@dataclass(frozen=True)
class Partition:
    """The run's data: the config with the data fingerprint filled in, the development set with its folds and the
    holdout (possibly empty), each the ``ImageSet`` the run directory keeps (``data.npz``, ``holdout.npz``)."""

    cfg: Config
    development: ImageSet
    holdout: ImageSet


def _with_fingerprint(cfg: Config, fingerprint: str) -> Config:
    given = cfg.data.fingerprint
    if given is not None and given != fingerprint:
        raise BenchError(f"data.fingerprint: the config says {given}, the data at {cfg.data.source} has {fingerprint} "
                         "(its images or masks changed); use a new --out")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fingerprint=fingerprint))


def _holdout_ids(cfg: Config, ids: list[str], masks: np.ndarray, path: Path) -> tuple[list[str], HoldoutRecord | None]:
    """The recorded holdout when ``path`` exists (checked), else a new one with the record to write."""
    d = cfg.data
    rule = {"source": "synthetic extra images" if d.source == "synthetic" else "stratified fraction",
            "fraction": d.holdout, "n_holdout": d.n_holdout, "seed": cfg.protocol.fold_seed}
    if path.is_file():
        saved = HoldoutRecord.read(path)
        held, saved_rule = saved.ids, saved.rule
        if saved_rule != rule:
            raise BenchError(f"{path}: the holdout was drawn by {saved_rule}, the config asks for {rule}; use a new --out")
        unknown = sorted(set(held) - set(ids))
        if unknown:
            raise BenchError(f"{path}: holdout id {unknown[0]} is not in the data")
        return held, None
    if d.source == "synthetic":
        held = source.synthetic_holdout_ids(d)
    elif d.holdout > 0:
        if round(d.holdout * len(ids)) >= len(ids):
            raise BenchError(f"data.holdout: {d.holdout} of {len(ids)} images leaves nothing to train on")
        mask = bfolds.holdout_split(masks, d.holdout, cfg.protocol.fold_seed)
        held = [i for i, h in zip(ids, mask) if h]
    else:
        held = []
    return held, HoldoutRecord(rule, held)


def partition(cfg: Config, splits_file: Path, holdout_file: Path) -> Partition:
    """Load the configured data, split off the holdout and fold the rest (reusing the recorded splits)."""
    data = source.load(cfg.data)
    cfg = _with_fingerprint(cfg, bfolds.dataset_fingerprint(data.ids, data.masks))
    held_ids, record = _holdout_ids(cfg, data.ids, data.masks, holdout_file)
    held = set(held_ids)
    dev = np.array([i not in held for i in data.ids], dtype=bool)
    ids = [i for i, keep in zip(data.ids, dev) if keep]
    if len(ids) < cfg.protocol.folds:
        raise BenchError(f"{cfg.data.source}: {len(ids)} development images cannot make protocol.folds="
                         f"{cfg.protocol.folds} folds")
    cfg = cost.resolve(cfg, len(ids))  # protocol.budget's epochs per architecture; refused before anything is written
    try:
        assignment = bfolds.load_or_make_splits(splits_file, ids, data.masks[dev], k=cfg.protocol.folds,
                                                seed=cfg.protocol.fold_seed)
    except ValueError as exc:
        if isinstance(exc, BenchError):
            raise
        raise BenchError(f"{splits_file}: {one_line(exc)}") from None
    if record is not None:  # written once the split has succeeded: a refused one leaves no run directory behind
        record.write(holdout_file)
    held_out = [i for i, keep in zip(data.ids, dev) if not keep]
    return Partition(cfg, ImageSet(np.array(ids), data.images[dev], data.masks[dev], assignment),
                     ImageSet(np.array(held_out), data.images[~dev], data.masks[~dev]))
