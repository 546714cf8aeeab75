"""Resolve ``data.source`` to a loaded dataset: the embedded synthetic set (generated once into a cache
folder, reused afterwards) or a Kaggle TGS folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.data import tgs


def cache_root() -> Path:
    return Path(os.environ.get("SALT_BENCH_CACHE", Path.home() / ".cache" / "salt-bench"))


def synthetic_dir(cfg: DataConfig) -> Path:
    style = "" if cfg.style == "default" else f"-{cfg.style}"
    return cache_root() / f"synthetic-n{cfg.n_train + cfg.n_holdout}-t{cfg.n_test}-s{cfg.seed}{style}"


def synthetic_holdout_ids(cfg: DataConfig) -> list[str]:
    """The ``n_holdout`` images generated after the ``n_train`` development images (the generator's image i
    depends only on (seed, i), so the development set is the same whatever ``n_holdout`` is)."""
    from bench.data import synthetic

    return synthetic.train_ids(cfg.seed, cfg.n_train + cfg.n_holdout)[cfg.n_train:]


def location(cfg: DataConfig) -> Path:
    """The folder that holds (or, for the synthetic source, will hold) the data; nothing is generated."""
    return synthetic_dir(cfg) if cfg.source == "synthetic" else Path(cfg.source).expanduser()


def resolve(cfg: DataConfig) -> Path:
    """The folder holding the data, generating the synthetic set on first use."""
    root = location(cfg)
    if cfg.source != "synthetic":
        return root
    if not (root / "train.csv").is_file():
        from bench.data import synthetic

        print(f"generating the synthetic dataset ({cfg.n_train} train + {cfg.n_holdout} holdout, {cfg.n_test} test, "
              f"seed {cfg.seed}, style {cfg.style}) into {root}")
        synthetic.write_dataset(root, n_train=cfg.n_train + cfg.n_holdout, n_test=cfg.n_test, seed=cfg.seed,
                                style=cfg.style)
    return root


def load(cfg: DataConfig) -> tgs.TGSData:
    """Load the configured data, restricted to a seeded random subset when ``data.subset`` is set."""
    data = tgs.load(resolve(cfg))
    if cfg.subset is not None and cfg.subset < len(data.ids):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(data.ids), cfg.subset, replace=False))
        data.ids = [data.ids[i] for i in keep]
        data.images, data.masks = data.images[keep], data.masks[keep]
        data.depths = None if data.depths is None else data.depths[keep]
    return data
