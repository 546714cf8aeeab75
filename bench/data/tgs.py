"""Read, validate and write the Kaggle TGS Salt layout, in exactly the formats of the real files.

Layout::

    train/images/<id>.png   101x101 8-bit; RGB with three equal channels (grayscale is read too)
    train/masks/<id>.png    non-empty: 16-bit grayscale 0/65535; empty: 8-bit zeros (any {0, max} is read)
    test/images/<id>.png
    train.csv               id,rle_mask (column-major RLE, see bench.data.rle)
    depths.csv              id,z for train and test ids (optional when reading)
    sample_submission.csv   id,rle_mask: the test ids in submission order

Every problem with the input is a one-line ``BenchError`` naming the file, because a benchmark on a
silently mis-read dataset is worse than no benchmark.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.folds import N_CLASSES, coverage_class
from bench.data.png import SIZE, bomb_warnings_as_errors, read_image, read_mask, write_png
from bench.data.rle import rle_decode, rle_encode
from bench.errors import BenchError, one_line

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # safe as a file name and as an unquoted CSV field
_WORKERS = min(8, os.cpu_count() or 1)  # PNG decoding and encoding release the GIL in zlib


@dataclass(eq=False)
class TGSData:
    """A loaded TGS folder: train arrays in ``ids`` order, the test split read on first use.

    Test ids are the order of ``sample_submission.csv`` when that file exists (the order Kaggle
    expects a submission in; then ``test/images`` must hold exactly those ids), otherwise the sorted
    file names of ``test/images/*.png`` (none when that folder is absent).
    """

    root: Path
    ids: list[str]
    images: np.ndarray
    masks: np.ndarray
    depths: np.ndarray | None
    _test_ids: list[str] | None = field(default=None, init=False, repr=False)
    _test_images: np.ndarray | None = field(default=None, init=False, repr=False)

    def test_ids(self) -> list[str]:
        """Test ids (see the class docstring for their order); cached."""
        if self._test_ids is None:
            self._test_ids = _read_test_ids(self.root)
        return list(self._test_ids)

    def test_images(self) -> np.ndarray:
        """(N_test, 101, 101) uint8 test images in ``test_ids()`` order; read once, then cached."""
        if self._test_images is None:
            ids = self.test_ids()
            folder = self.root / "test" / "images"
            self._test_images = _stack([folder / f"{i}.png" for i in ids], read_image, np.uint8)
        return self._test_images


# ---------------------------------------------------------------------------------------- reading


def load(root: str | os.PathLike) -> TGSData:
    """Read and validate a TGS folder (see the module docstring for the layout)."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"{root}: not a directory")
    image_dir = root / "train" / "images"
    image_ids = _png_ids(image_dir)
    if not image_ids:
        raise BenchError(f"{image_dir}: no training images (*.png)")
    train_csv = root / "train.csv"
    rles: dict[str, str] | None = None
    if train_csv.exists():
        rles = _read_id_csv(train_csv, "rle_mask")
        ids = list(rles)
        _check_same_ids(train_csv, ids, image_dir, image_ids)
    else:
        ids = sorted(image_ids)

    images = _stack([image_dir / f"{i}.png" for i in ids], read_image, np.uint8)
    mask_dir = root / "train" / "masks"
    if mask_dir.is_dir():
        _check_same_ids(image_dir, ids, mask_dir, _png_ids(mask_dir))
        masks = _stack([mask_dir / f"{i}.png" for i in ids], read_mask, bool)
        if rles is not None:
            _check_masks_match_rle(masks, ids, rles, mask_dir, train_csv)
    elif rles is not None:
        masks = np.stack([_decode(rles[i], i, train_csv) for i in ids])
    else:
        raise BenchError(f"{root}: no masks: neither {mask_dir} nor {train_csv} exists")

    depths = None
    depths_csv = root / "depths.csv"
    if depths_csv.exists():
        table = _read_depths(depths_csv)
        missing = [i for i in ids if i not in table]
        if missing:
            raise BenchError(f"{depths_csv}: no depth for train id {missing[0]}" + _more(missing))
        depths = np.array([table[i] for i in ids], dtype=np.int64)
    return TGSData(root=root, ids=ids, images=images, masks=masks, depths=depths)


def _more(items: Sequence[object]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def _png_ids(folder: Path) -> list[str]:
    """Ids of ``folder/*.png``; a missing folder is an error naming it."""
    if not folder.is_dir():
        raise BenchError(f"{folder}: missing folder")
    return [p.stem for p in folder.iterdir() if p.suffix == ".png"]


def _check_same_ids(listing: Path, ids: Sequence[str], folder: Path, file_ids: Sequence[str]) -> None:
    """Every id listed in ``listing`` has ``folder/<id>.png`` and every such file is listed."""
    listed, present = set(ids), set(file_ids)
    missing = [i for i in ids if i not in present]
    if missing:
        raise BenchError(f"{listing}: id {missing[0]} has no file {folder / (missing[0] + '.png')}" + _more(missing))
    extra = sorted(present - listed)
    if extra:
        raise BenchError(f"{folder / (extra[0] + '.png')}: id {extra[0]} is not in {listing}" + _more(extra))


def _stack(paths: Sequence[Path], read: Callable[[Path], np.ndarray], dtype: type) -> np.ndarray:
    """Read ``paths`` with a small thread pool into one (N, 101, 101) array; the first error (in order) wins."""
    out = np.empty((len(paths), SIZE, SIZE), dtype=dtype)
    if not paths:
        return out
    with bomb_warnings_as_errors(), ThreadPoolExecutor(_WORKERS) as pool:
        for i, pixels in enumerate(pool.map(read, paths, chunksize=64)):
            out[i] = pixels
    return out


def _read_csv(path: Path, header: list[str]) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each data row of a small CSV with ``header`` (spaces around a name, as in
    ``id, rle_mask``, ignored); blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: unreadable CSV ({one_line(exc)})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise BenchError(f"{path}: malformed CSV ({one_line(exc)})") from None
    if not rows or [name.strip() for name in rows[0]] != header:  # "id, rle_mask" is the same header
        got = ",".join(rows[0]) if rows else ""
        raise BenchError(f"{path}: wrong header {got!r}, expected {','.join(header)!r}")
    body = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise BenchError(f"{path}: line {line}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        body.append((line, row))
    return body


def _read_id_csv(path: Path, column: str) -> dict[str, str]:
    """``{id: value}`` of an ``id,<column>`` CSV in file order; empty or duplicate ids are errors."""
    table: dict[str, str] = {}
    for line, (ident, value) in _read_csv(path, ["id", column]):
        if not ident:
            raise BenchError(f"{path}: line {line}: empty id")
        if ident in table:
            raise BenchError(f"{path}: line {line}: duplicate id {ident}")
        table[ident] = value
    return table


def _decode(rle: str, ident: str, path: Path) -> np.ndarray:
    try:
        return rle_decode(rle, (SIZE, SIZE))
    except ValueError as exc:
        raise BenchError(f"{path}: id {ident}: bad RLE: {exc}") from None


def _check_masks_match_rle(masks: np.ndarray, ids: Sequence[str], rles: Mapping[str, str],
                           mask_dir: Path, train_csv: Path) -> None:
    """When both mask PNGs and train.csv exist they must agree, or the labels are ambiguous."""
    for i, ident in enumerate(ids):
        if not np.array_equal(masks[i], _decode(rles[ident], ident, train_csv)):
            raise BenchError(f"{mask_dir / (ident + '.png')}: mask of id {ident} differs from its RLE in {train_csv}")


def _read_depths(path: Path) -> dict[str, int]:
    depths: dict[str, int] = {}
    for line, (ident, z) in _read_csv(path, ["id", "z"]):
        if ident in depths:
            raise BenchError(f"{path}: line {line}: duplicate id {ident}")
        try:
            depths[ident] = int(z)
        except ValueError:
            raise BenchError(f"{path}: line {line}: id {ident}: depth {z!r} is not an integer") from None
    return depths


def _read_test_ids(root: Path) -> list[str]:
    """Test ids: sample_submission.csv order when present (checked against test/images), else sorted files."""
    folder = root / "test" / "images"
    submission = root / "sample_submission.csv"
    if submission.exists():
        ids = list(_read_id_csv(submission, "rle_mask"))
        _check_same_ids(submission, ids, folder, _png_ids(folder))
        return ids
    return sorted(_png_ids(folder)) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------- writing


def write(
    root: str | os.PathLike,
    ids: Sequence[str],
    images: np.ndarray,
    masks: np.ndarray,
    depths: Mapping[str, int] | None = None,
    test_ids: Sequence[str] | None = None,
    test_images: np.ndarray | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a TGS folder in exactly the real formats; all of it appears at once or none of it.

    The folder is built in a temporary directory beside ``root`` and renamed into place. An existing
    non-empty ``root`` is an error unless ``overwrite`` (then it is replaced whole, never merged).
    ``sample_submission.csv`` gets ``1 1`` as every rle_mask, like Kaggle's own sample.
    """
    root = Path(root)
    if (test_ids is None) != (test_images is None):
        raise ValueError("test_ids and test_images go together")
    with_test = test_ids is not None
    ids, test_ids = list(ids), list(test_ids or [])
    images = _check_arrays("images", images, ids, np.uint8)
    masks = _check_arrays("masks", masks, ids, np.bool_)
    if with_test:
        test_images = _check_arrays("test_images", test_images, test_ids, np.uint8)
    _check_ids(ids + test_ids)
    depth_rows: list[tuple[str, int]] | None = None
    if depths is not None:
        missing = [i for i in ids + test_ids if i not in depths]
        if missing:
            raise ValueError(f"depths has no entry for id {missing[0]}" + _more(missing))
        depth_rows = [(i, _as_int(depths[i], i)) for i in ids + test_ids]

    if root.exists() and not root.is_dir():
        raise BenchError(f"{root}: exists and is not a directory")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise BenchError(f"{root}: exists and is not empty; refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    try:
        jobs: list[tuple[Path, np.ndarray, bool]] = [(tmp / "train" / "images" / f"{i}.png", im, False)
                                                      for i, im in zip(ids, images)]
        jobs += [(tmp / "train" / "masks" / f"{i}.png", m, True) for i, m in zip(ids, masks)]
        if with_test:
            jobs += [(tmp / "test" / "images" / f"{i}.png", im, False) for i, im in zip(test_ids, test_images)]
        for folder in {path.parent for path, _, _ in jobs} | {tmp / "train" / "images", tmp / "train" / "masks"}:
            folder.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(_WORKERS) as pool:
            list(pool.map(write_png, jobs, chunksize=64))
        _write_csv(tmp / "train.csv", ["id", "rle_mask"], [(i, rle_encode(m)) for i, m in zip(ids, masks)])
        if with_test:
            _write_csv(tmp / "sample_submission.csv", ["id", "rle_mask"], [(i, "1 1") for i in test_ids])
        if depth_rows is not None:
            _write_csv(tmp / "depths.csv", ["id", "z"], depth_rows)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _check_arrays(name: str, arr: np.ndarray, ids: Sequence[str], dtype: type) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != (len(ids), SIZE, SIZE):
        raise ValueError(f"{name} must have shape ({len(ids)}, {SIZE}, {SIZE}) for {len(ids)} ids, got {arr.shape}")
    if arr.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype)}, got {arr.dtype}")
    return arr


def _check_ids(ids: Sequence[str]) -> None:
    """Ids become file names and CSV fields: safe characters only, unique across train and test."""
    bad = [i for i in ids if not isinstance(i, str) or not _ID.fullmatch(i)]
    if bad:
        raise ValueError(f"invalid id {bad[0]!r}: use letters, digits, '.', '_' and '-' (not first)")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate id {i}")
        seen.add(i)


def _as_int(value: object, ident: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"depth of id {ident} must be an integer, got {value!r}")
    return int(value)


def _write_csv(path: Path, header: list[str], rows: Sequence[tuple[str, object]]) -> None:
    lines = [",".join(header)] + [f"{a},{b}" for a, b in rows]
    try:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")
    except OSError as exc:
        if exc.filename is None:  # a failed write (disk full) does not say which file; the CLI prints it
            exc.filename = str(path)
        raise


def _replace_dir(tmp: Path, root: Path) -> None:
    """Rename the finished ``tmp`` to ``root``; an old ``root`` is moved aside first and deleted after."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".old"))
        os.replace(root, old / root.name)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------- summary


def summary(data: TGSData) -> dict:
    """Counts and label statistics for ``salt-bench data check`` and for comparing synthetic with real data."""
    n_train = len(data.ids)
    classes = coverage_class(data.masks)
    flat = data.images.reshape(n_train, -1)
    constant = int(np.count_nonzero(flat.min(axis=1) == flat.max(axis=1))) if n_train else 0
    return {
        "root": str(data.root),
        "n_train": n_train,
        "n_test": len(data.test_ids()),
        "empty_fraction": float(np.mean(classes == 0)) if n_train else 0.0,
        "coverage_classes": np.bincount(classes, minlength=N_CLASSES).tolist(),
        "depth_min": int(data.depths.min()) if data.depths is not None and n_train else None,
        "depth_max": int(data.depths.max()) if data.depths is not None and n_train else None,
        "n_constant_images": constant,
    }


def format_summary(d: Mapping[str, object]) -> str:
    """Readable multi-line block of a ``summary`` dict."""
    hist = d["coverage_classes"]
    depth = "absent (no depths.csv)" if d["depth_min"] is None else f"{d['depth_min']} .. {d['depth_max']}"
    return "\n".join([
        f"dataset          {d['root']}",
        f"train images     {d['n_train']}",
        f"test images      {d['n_test']}",
        f"empty masks      {d['empty_fraction']:.2%}",
        f"constant images  {d['n_constant_images']} (train)",
        f"depth z          {depth}",
        "coverage class   " + " ".join(f"{c:>5d}" for c in range(len(hist))),
        "  (ceil 10*cov)  " + " ".join(f"{n:>5d}" for n in hist),
    ])
