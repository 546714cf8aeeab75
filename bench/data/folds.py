"""Coverage-stratified K folds, fixed once per dataset in ``splits.json`` and shared by every architecture.

Folds are computed here (no sklearn) so the assignment is fully specified by (masks, k, seed) and
reproducible across library versions; once written, ``splits.json`` is the authority and is reloaded,
never recomputed, so every architecture in a benchmark is validated on exactly the same images.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench import atomic
from bench.errors import BenchError
from bench.rundir import Splits

N_CLASSES = 11  # coverage classes 0 (empty) .. 10 (more than 90% salt)
_IMAGESET_NAMES = ("train", "val", "trainval")


def coverage_class(masks: np.ndarray) -> np.ndarray:
    """Per-image class ``ceil(10 * coverage)`` as in the competition's public kernels (0 = empty mask).

    Computed with integers, so a coverage of exactly 0.3 is class 3, not 4 by a float rounding slip.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected (N, H, W) masks, got shape {masks.shape}")
    n_pixels = masks.shape[1] * masks.shape[2]
    salt = np.count_nonzero(masks.reshape(masks.shape[0], -1), axis=1).astype(np.int64)
    return (10 * salt + n_pixels - 1) // n_pixels


def make_folds(masks: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per image, stratified by coverage class.

    Each class is shuffled with its own seeded generator and dealt round-robin; the dealing offset
    carries over from one class to the next, so per fold and class the counts differ by at most one
    from even, and the fold sizes differ by at most one as well.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    classes = coverage_class(masks)
    if classes.size < k:
        raise ValueError(f"cannot make {k} folds from {classes.size} images")
    folds = np.empty(classes.size, dtype=np.int64)
    offset = 0
    for cls in range(N_CLASSES):
        members = np.flatnonzero(classes == cls)
        order = np.random.default_rng([seed, cls]).permutation(members)
        folds[order] = (offset + np.arange(order.size)) % k
        offset = (offset + order.size) % k
    return folds


def holdout_split(masks: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Bool per image, True for the holdout: ``round(fraction * N)`` images, stratified by coverage class.

    Each class gives its share (largest remainders round up), drawn with its own seeded generator, so the
    holdout has the coverage profile of the whole set.
    """
    classes = coverage_class(masks)
    total = int(round(fraction * classes.size))
    counts = np.bincount(classes, minlength=N_CLASSES).astype(np.float64)
    want = counts * total / max(classes.size, 1)
    take = np.floor(want).astype(np.int64)
    short = total - int(take.sum())
    take[np.argsort(-(want - take), kind="stable")[:short]] += 1
    held = np.zeros(classes.size, dtype=bool)
    for cls in range(N_CLASSES):
        members = np.random.default_rng([seed, 1000 + cls]).permutation(np.flatnonzero(classes == cls))
        held[members[: take[cls]]] = True
    return held


def dataset_fingerprint(ids: Sequence[str], masks: np.ndarray) -> str:
    """Short sha256 of the ids (in order) and the packed masks: changes when any id or label changes."""
    masks = np.asarray(masks, dtype=bool)
    digest = hashlib.sha256()
    digest.update("\n".join(ids).encode("utf-8"))
    digest.update(repr(masks.shape).encode("ascii"))
    digest.update(np.packbits(masks).tobytes())
    return digest.hexdigest()[:16]


def load_or_make_splits(
    path: str | Path, ids: Sequence[str], masks: np.ndarray, k: int = 5, seed: int = 0
) -> np.ndarray:
    """Reload ``path`` (splits.json) when it matches this dataset, k and seed; else make and save the folds.

    A file written for another dataset, k or seed is an error rather than silently replaced: other
    runs may already have been trained on it.
    """
    path = Path(path)
    ids = list(ids)
    if len(ids) != len(masks):
        raise ValueError(f"{len(ids)} ids but {len(masks)} masks")
    if not 2 <= k <= len(ids):
        raise BenchError(f"{path}: cannot make {k} folds from {len(ids)} images (k must be from 2 to the number of images)")
    fingerprint = dataset_fingerprint(ids, masks)
    if path.exists():
        return _read_splits(path, ids, fingerprint, k, seed)
    folds = make_folds(masks, k=k, seed=seed)
    Splits(fingerprint, k, seed, {i: int(f) for i, f in zip(ids, folds)}).write(path)
    return folds


def _read_splits(path: Path, ids: list[str], fingerprint: str, k: int, seed: int) -> np.ndarray:
    """Check an existing splits.json against the requested dataset, k and seed."""
    saved = Splits.read(path)
    wanted = {"fingerprint": fingerprint, "k": k, "seed": seed}
    differs = [f"{key} {getattr(saved, key)!r} in the file, {value!r} requested" for key, value in wanted.items()
               if getattr(saved, key) != value]
    if differs:
        raise BenchError(
            f"{path}: splits were made for another setting ({'; '.join(differs)}); "
            "use another --out or delete the file to re-split"
        )
    table = saved.folds
    if set(table) != set(ids):
        raise BenchError(f"{path}: its ids do not match the dataset although the fingerprint does (edited by hand?)")
    folds = np.array([table[i] for i in ids])
    if folds.dtype.kind not in "iu" or folds.min() < 0 or folds.max() >= k:
        raise BenchError(f"{path}: fold indices must be integers in 0..{k - 1}")
    return folds.astype(np.int64)


def export_imagesets(ids: Sequence[str], folds: np.ndarray, out_dir: str | Path) -> Path:
    """Write DeepLab-style ``fold<k>/{train,val,trainval}.txt`` (one id per line, dataset order).

    Lists of folds beyond this k (left by an earlier split with a larger k) are removed, so the folder
    never describes two splits at once.
    """
    out_dir = Path(out_dir)
    ids = list(ids)
    folds = np.asarray(folds)
    if len(ids) != len(folds):
        raise ValueError(f"{len(ids)} ids but {len(folds)} fold indices")
    k = int(folds.max()) + 1
    for stale in out_dir.glob("fold*"):
        if stale.is_dir() and stale.name[4:].isdigit() and int(stale.name[4:]) >= k:
            for name in _IMAGESET_NAMES:
                (stale / f"{name}.txt").unlink(missing_ok=True)
            if not any(stale.iterdir()):
                stale.rmdir()
    for fold in range(k):
        val = folds == fold
        lines = {
            "train": [i for i, v in zip(ids, val) if not v],
            "val": [i for i, v in zip(ids, val) if v],
            "trainval": ids,
        }
        for name, members in lines.items():
            atomic.write_text(out_dir / f"fold{fold}" / f"{name}.txt", "".join(f"{m}\n" for m in members))
    return out_dir


def format_folds(masks: np.ndarray, folds: np.ndarray) -> str:
    """Table of image counts per fold (rows) and coverage class (columns), to eyeball the stratification."""
    classes = coverage_class(masks)
    folds = np.asarray(folds)
    k = int(folds.max()) + 1
    counts = np.zeros((k, N_CLASSES), dtype=np.int64)
    np.add.at(counts, (folds, classes), 1)
    header = "fold " + " ".join(f"{c:>5d}" for c in range(N_CLASSES)) + "  total"
    rows = [f"{f:>4d} " + " ".join(f"{n:>5d}" for n in counts[f]) + f" {counts[f].sum():>6d}" for f in range(k)]
    footer = " all " + " ".join(f"{n:>5d}" for n in counts.sum(0)) + f" {counts.sum():>6d}"
    return "\n".join(["images per fold and coverage class (0 = empty, c = coverage in ((c-1)/10, c/10])",
                      header, *rows, footer])
