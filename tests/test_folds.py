"""Coverage-stratified folds on the real TGS labels: balance, determinism, splits.json reuse, ImageSets."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bench.data.folds import (
    N_CLASSES,
    coverage_class,
    dataset_fingerprint,
    export_imagesets,
    format_folds,
    load_or_make_splits,
    make_folds,
)
from bench.data.rle import rle_decode
from bench.errors import BenchError

REAL_CLASS_COUNTS = [1562, 576, 296, 224, 186, 225, 205, 174, 148, 159, 245]  # from tgs-real/README.md


@pytest.fixture(scope="module")
def real_labels(real_dir) -> tuple[list[str], np.ndarray]:
    with open(real_dir / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["id"] for r in rows], np.stack([rle_decode(r["rle_mask"]) for r in rows])


def _synthetic_masks(n: int = 60, seed: int = 1) -> np.ndarray:
    """Masks spread over the coverage classes: each image has a random number (0..101) of salt columns."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 101, 101), dtype=bool)
    for i in range(n):
        masks[i, :, : int(rng.integers(0, 102))] = True
    return masks


def test_coverage_class_boundaries_are_exact():
    masks = np.zeros((5, 10, 10), dtype=bool)
    masks[1].flat[:1] = True    # 1%   -> 1
    masks[2].flat[:30] = True   # 30%  -> 3 exactly, not 4
    masks[3].flat[:31] = True   # 31%  -> 4
    masks[4].flat[:] = True     # 100% -> 10
    assert coverage_class(masks).tolist() == [0, 1, 3, 4, 10]


def test_coverage_classes_of_the_real_labels(real_labels):
    _, masks = real_labels
    assert np.bincount(coverage_class(masks), minlength=N_CLASSES).tolist() == REAL_CLASS_COUNTS


@pytest.mark.parametrize(("k", "seed"), [(5, 0), (5, 7), (4, 0), (10, 3)])
def test_stratification_bound_on_real_labels(real_labels, k, seed):
    _, masks = real_labels
    folds = make_folds(masks, k=k, seed=seed)
    classes = coverage_class(masks)
    assert set(folds.tolist()) == set(range(k))
    for cls in range(N_CLASSES):
        counts = np.bincount(folds[classes == cls], minlength=k)
        even = REAL_CLASS_COUNTS[cls] / k
        assert np.all(np.abs(counts - even) < 1), (cls, counts)
    sizes = np.bincount(folds, minlength=k)
    assert sizes.max() - sizes.min() <= 1


def test_folds_are_deterministic_and_depend_on_the_seed():
    masks = _synthetic_masks()
    a, b = make_folds(masks, k=5, seed=3), make_folds(masks, k=5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make_folds(masks, k=5, seed=4))


def test_bad_k_is_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        make_folds(_synthetic_masks(), k=1)
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 images"):
        make_folds(_synthetic_masks(3), k=5)


def test_fingerprint_tracks_ids_and_labels():
    masks = _synthetic_masks()
    ids = [f"id{i}" for i in range(len(masks))]
    base = dataset_fingerprint(ids, masks)
    assert base == dataset_fingerprint(list(ids), masks.copy())
    flipped = masks.copy()
    flipped[7, 50, 50] ^= True
    assert dataset_fingerprint(ids, flipped) != base
    assert dataset_fingerprint(ids[::-1], masks) != base


def test_splits_are_written_then_reloaded_not_recomputed(tmp_path, real_labels):
    ids, masks = real_labels
    path = tmp_path / "splits.json"
    folds = load_or_make_splits(path, ids, masks, k=5, seed=0)
    saved = json.loads(path.read_text())
    assert saved["k"] == 5 and saved["seed"] == 0
    assert saved["fingerprint"] == dataset_fingerprint(ids, masks)
    assert [saved["folds"][i] for i in ids] == folds.tolist()

    # A file that is reloaded wins over a recomputation: swap two folds by hand and get them back.
    saved["folds"][ids[0]], saved["folds"][ids[1]] = int(folds[0] + 1) % 5, int(folds[1] + 1) % 5
    path.write_text(json.dumps(saved))
    reloaded = load_or_make_splits(path, ids, masks, k=5, seed=0)
    assert reloaded[0] == (folds[0] + 1) % 5 and reloaded[1] == (folds[1] + 1) % 5
    np.testing.assert_array_equal(reloaded[2:], folds[2:])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 4}, r"k 5 in the file, 4 requested"),
        ({"seed": 1}, r"seed 0 in the file, 1 requested"),
        ({"flip": True}, r"fingerprint '[0-9a-f]{16}' in the file"),
    ],
)
def test_mismatched_splits_file_is_an_error_naming_it(tmp_path, change, message):
    masks = _synthetic_masks()
    ids = [f"id{i}" for i in range(len(masks))]
    path = tmp_path / "splits.json"
    load_or_make_splits(path, ids, masks, k=5, seed=0)
    before = path.read_text()
    if change.pop("flip", False):
        masks = masks.copy()
        masks[0, 0, 0] ^= True
    args = {"k": 5, "seed": 0, **change}
    with pytest.raises(BenchError, match=message) as err:
        load_or_make_splits(path, ids, masks, **args)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == before


def test_corrupt_splits_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text("{not json")
    masks = _synthetic_masks()
    with pytest.raises(BenchError, match=r"splits\.json: unreadable splits file"):
        load_or_make_splits(path, [f"id{i}" for i in range(len(masks))], masks)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[1, 2]', r"splits\.json: not a splits file \(a JSON list, expected an object\)"),
        ('{"fingerprint": "x", "k": 5}', r"splits\.json: not a splits file \(no 'seed', 'folds'\)"),
        ('{"fingerprint": "x", "k": 5, "seed": 0, "folds": [0]}', r"splits\.json: not a splits file \(its folds are a JSON list"),
    ],
)
def test_a_splits_file_of_another_shape_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "splits.json"
    path.write_text(text)
    masks = _synthetic_masks()
    with pytest.raises(BenchError, match=message) as err:
        load_or_make_splits(path, [f"id{i}" for i in range(len(masks))], masks)
    assert "\n" not in str(err.value)


def test_imagesets_content(tmp_path):
    masks = _synthetic_masks(23)
    ids = [f"id{i:02d}" for i in range(len(masks))]
    folds = make_folds(masks, k=3, seed=0)
    out = export_imagesets(ids, folds, tmp_path / "ImageSets")
    assert sorted(p.name for p in out.iterdir()) == ["fold0", "fold1", "fold2"]
    for k in range(3):
        read = {name: (out / f"fold{k}" / f"{name}.txt").read_text().splitlines()
                for name in ("train", "val", "trainval")}
        assert read["val"] == [i for i, f in zip(ids, folds) if f == k]
        assert read["train"] == [i for i, f in zip(ids, folds) if f != k]
        assert read["trainval"] == ids
        assert (out / f"fold{k}" / "val.txt").read_text().endswith("\n")


def test_format_folds_table(real_labels):
    _, masks = real_labels
    text = format_folds(masks, make_folds(masks, k=5, seed=0))
    lines = text.splitlines()
    assert len(lines) == 1 + 1 + 5 + 1
    assert lines[-1].split()[1:] == [str(c) for c in REAL_CLASS_COUNTS] + ["4000"]
    assert [line.split()[-1] for line in lines[2:7]] == ["800"] * 5


def test_imagesets_of_a_smaller_k_remove_the_stale_folds(tmp_path):
    masks = _synthetic_masks(23)
    ids = [f"id{i:02d}" for i in range(len(masks))]
    out = tmp_path / "ImageSets"
    export_imagesets(ids, make_folds(masks, k=5, seed=0), out)
    (out / "fold4" / "notes.md").write_text("not ours")
    export_imagesets(ids, make_folds(masks, k=3, seed=0), out)
    assert sorted(p.name for p in out.iterdir()) == ["fold0", "fold1", "fold2", "fold4"]
    assert [p.name for p in (out / "fold4").iterdir()] == ["notes.md"]


@pytest.mark.parametrize("k", [1, 4])
def test_impossible_k_is_refused_naming_the_file_before_writing(tmp_path, k):
    masks = _synthetic_masks(3)
    path = tmp_path / "splits.json"
    with pytest.raises(BenchError, match=f"{path}: cannot make {k} folds from 3 images") as err:
        load_or_make_splits(path, ["a", "b", "c"], masks, k=k)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
