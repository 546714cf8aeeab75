"""The embedded synthetic dataset: determinism, formats, and label statistics calibrated on the real TGS train set."""
from __future__ import annotations

import csv
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bench import cli, config
from bench.data import source, synthetic, tgs
from bench.data.folds import N_CLASSES, coverage_class
from bench.data.synthetic import REAL_CLASS_COUNTS, SIZE, generate, make_ids, write_dataset
from bench.errors import BenchError

N_STATS = 2000


@pytest.fixture(scope="module")
def big() -> synthetic.SyntheticSet:
    """Enough images that the label statistics mean something (sampling sd of the empty fraction ~0.011)."""
    return generate(N_STATS, 0, seed=0)


def _tv(counts: np.ndarray, reference: np.ndarray) -> float:
    p, q = np.asarray(counts, float), np.asarray(reference, float)
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def _real_class_counts(real_dir: Path) -> np.ndarray:
    """Coverage classes of the real train masks, from the run lengths of train.csv (no decoding needed)."""
    with open(real_dir / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pixels = np.array([sum(int(v) for v in r["rle_mask"].split()[1::2]) for r in rows])
    classes = -(-10 * pixels // (SIZE * SIZE))  # integer ceil(10 * coverage)
    return np.bincount(classes, minlength=N_CLASSES)


def test_same_seed_same_bits_and_other_seed_differs() -> None:
    a, b, c = generate(12, 6, seed=3), generate(12, 6, seed=3), generate(12, 6, seed=4)
    for name in ("images", "masks", "test_images", "test_masks"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.ids, a.test_ids, a.depths) == (b.ids, b.test_ids, b.depths)
    assert not np.array_equal(a.images, c.images)
    assert set(a.ids).isdisjoint(c.ids)


def test_an_image_does_not_depend_on_how_many_others_are_generated() -> None:
    small, large = generate(5, 3, seed=1), generate(20, 0, seed=1)
    np.testing.assert_array_equal(small.images, large.images[:5])
    np.testing.assert_array_equal(small.masks, large.masks[:5])
    assert small.ids == large.ids[:5]
    assert [small.depths[i] for i in small.ids] == [large.depths[i] for i in large.ids[:5]]
    test_only = generate(0, 3, seed=1)
    np.testing.assert_array_equal(small.test_images, test_only.test_images)
    assert small.test_ids == test_only.test_ids


def test_shapes_and_dtypes() -> None:
    d = generate(7, 4, seed=0)
    assert d.images.shape == d.masks.shape == (7, SIZE, SIZE)
    assert d.test_images.shape == d.test_masks.shape == (4, SIZE, SIZE)
    assert d.images.dtype == d.test_images.dtype == np.uint8
    assert d.masks.dtype == d.test_masks.dtype == np.bool_
    assert len(d.ids) == 7 and len(d.test_ids) == 4 and len(d.depths) == 11
    assert all(isinstance(z, int) for z in d.depths.values())


def test_negative_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        generate(-1, 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_ids_look_like_kaggle_and_are_unique_across_a_full_sized_dataset(seed: int) -> None:
    ids = make_ids(seed, 0, 4000) + make_ids(seed, 1, 18000)
    assert all(re.fullmatch(r"[0-9a-f]{10}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_class_histogram_constant_is_the_real_one(real_dir: Path) -> None:
    assert _real_class_counts(real_dir).tolist() == list(REAL_CLASS_COUNTS)


def test_empty_fraction_matches_real(big: synthetic.SyntheticSet) -> None:
    empty = float((~big.masks.any((1, 2))).mean())
    assert abs(empty - REAL_CLASS_COUNTS[0] / sum(REAL_CLASS_COUNTS)) <= 0.02, empty


def test_coverage_histogram_is_close_to_real(big: synthetic.SyntheticSet, real_dir: Path) -> None:
    counts = np.bincount(coverage_class(big.masks), minlength=N_CLASSES)
    assert _tv(counts, _real_class_counts(real_dir)) <= 0.06, counts.tolist()
    assert not big.masks.all((1, 2)).any(), "the real data has no full mask"


def test_vertical_masks_occur_at_the_real_rate(big: synthetic.SyntheticSet) -> None:
    masks = big.masks
    vertical = ((masks.all(1) | ~masks.any(1)).all(1) & masks.any((1, 2))).sum()
    expected = 113 / 4000 * N_STATS  # real: 113 of 4000
    assert 0.5 * expected <= vertical <= 1.5 * expected, vertical


def test_salt_bodies_enter_from_a_border_like_real_ones(big: synthetic.SyntheticSet) -> None:
    salt = big.masks[big.masks.any((1, 2))]
    touches = salt[:, 0].any(1) | salt[:, -1].any(1) | salt[:, :, 0].any(1) | salt[:, :, -1].any(1)
    assert touches.mean() > 0.98  # real: 99.6%


def test_constant_grey_images_are_about_two_percent_and_salt_free(big: synthetic.SyntheticSet) -> None:
    flat = big.images.reshape(N_STATS, -1)
    grey = flat.min(1) == flat.max(1)
    assert 0.01 <= grey.mean() <= 0.03, grey.mean()
    assert not big.masks[grey].any()


def test_images_are_mid_grey_with_real_contrast(big: synthetic.SyntheticSet) -> None:
    flat = big.images.reshape(N_STATS, -1).astype(float)
    textured = flat.std(1) > 0
    assert 110 <= flat[textured].mean() <= 135  # real samples: 98..154, mean ~120
    assert 18 <= np.median(flat[textured].std(1)) <= 32  # real samples: 15..40


def test_salt_interior_is_quieter_than_the_sediments(big: synthetic.SyntheticSet) -> None:
    """The cue a model must learn: weak chaotic interior inside, layered reflectors outside."""
    ratios = []
    for image, mask in zip(big.images, big.masks):
        if not 0.3 <= mask.mean() <= 0.7 or (mask.all(0) | ~mask.any(0)).all():
            continue
        inside = ndimage.binary_erosion(mask, iterations=8)
        outside = ndimage.binary_erosion(~mask, iterations=8)
        if inside.sum() > 200 and outside.sum() > 200:
            ratios.append(image[inside].std() / max(image[outside].std(), 1e-9))
    assert len(ratios) > 100
    assert np.median(ratios) < 0.8, np.median(ratios)


def test_depths_in_range_and_mildly_correlated_with_salt(big: synthetic.SyntheticSet) -> None:
    z = np.array([big.depths[i] for i in big.ids])
    assert z.min() >= 50 and z.max() <= 959
    r = np.corrcoef(z, big.masks.any((1, 2)))[0, 1]
    assert 0.03 < r < 0.3, r  # real: 0.125


def test_generation_is_fast_enough_for_the_one_core_budget() -> None:
    """22,000 images must take under 60 s on one core (~2.7 ms each); fail only on a gross slowdown. CPU time
    of this process, not wall time, so a busy machine does not fail it."""
    start = time.process_time()
    generate(300, 0, seed=5)
    assert (time.process_time() - start) / 300 < 0.012


def test_write_dataset_round_trips_through_tgs_load(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "synth", n_train=30, n_test=12, seed=2)
    expected = generate(30, 12, seed=2)
    data = tgs.load(root)
    assert data.ids == expected.ids
    np.testing.assert_array_equal(data.images, expected.images)
    np.testing.assert_array_equal(data.masks, expected.masks)
    assert data.depths.tolist() == [expected.depths[i] for i in expected.ids]
    assert data.test_ids() == expected.test_ids
    np.testing.assert_array_equal(data.test_images(), expected.test_images)
    with open(root / "depths.csv", newline="") as fh:
        assert {r["id"]: int(r["z"]) for r in csv.DictReader(fh)} == expected.depths


def test_hidden_test_labels_side_file(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "synth", n_train=4, n_test=9, seed=7)
    expected = generate(4, 9, seed=7)
    with np.load(root / "synthetic_test_masks.npz") as side:
        assert side["ids"].tolist() == expected.test_ids
        np.testing.assert_array_equal(side["masks"], expected.test_masks)
    assert not list(root.glob(".*.tmp"))


N_HARD = 400


@pytest.fixture(scope="module")
def hard() -> synthetic.SyntheticSet:
    """The hard style of the first N_HARD images of ``big`` (same seed): same labels, other pictures."""
    return generate(N_HARD, 0, seed=0, style="hard")


def test_hard_style_repaints_the_images_and_keeps_every_label() -> None:
    default, hard = generate(40, 12, seed=2), generate(40, 12, seed=2, style="hard")
    assert (hard.ids, hard.test_ids, hard.depths) == (default.ids, default.test_ids, default.depths)
    np.testing.assert_array_equal(hard.masks, default.masks)
    np.testing.assert_array_equal(hard.test_masks, default.test_masks)
    flat = default.images.reshape(40, -1)
    grey = flat.min(1) == flat.max(1)
    changed = (hard.images != default.images).any((1, 2))
    assert changed[~grey].all() and not changed[grey].any()


def test_hard_style_is_deterministic_per_image() -> None:
    small, large = generate(5, 3, seed=1, style="hard"), generate(20, 0, seed=1, style="hard")
    np.testing.assert_array_equal(small.images, large.images[:5])
    np.testing.assert_array_equal(small.test_images, generate(0, 3, seed=1, style="hard").test_images)
    assert not np.array_equal(small.images, generate(5, 0, seed=2, style="hard").images)


def test_unknown_style_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown style 'easy'"):
        generate(1, 0, style="easy")


def test_hard_images_keep_the_real_grey_levels(hard: synthetic.SyntheticSet) -> None:
    flat = hard.images.reshape(N_HARD, -1).astype(float)
    textured = flat.std(1) > 0
    assert 110 <= flat[textured].mean() <= 135
    assert 18 <= np.median(flat[textured].std(1)) <= 32


def _interior_ratios(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Std inside the salt over std outside, for half-salt images with room inside and out."""
    ratios = []
    for image, mask in zip(images, masks):
        if not 0.3 <= mask.mean() <= 0.7 or (mask.all(0) | ~mask.any(0)).all():
            continue
        inside = ndimage.binary_erosion(mask, iterations=8)
        outside = ndimage.binary_erosion(~mask, iterations=8)
        if inside.sum() > 200 and outside.sum() > 200:
            ratios.append(image[inside].std() / max(image[outside].std(), 1e-9))
    return np.asarray(ratios)


def test_hard_salt_contrast_is_weaker_but_still_there(big: synthetic.SyntheticSet, hard: synthetic.SyntheticSet) -> None:
    default = _interior_ratios(big.images[:N_HARD], big.masks[:N_HARD])
    repainted = _interior_ratios(hard.images, hard.masks)
    assert len(repainted) == len(default) > 30
    assert np.median(repainted) > np.median(default) + 0.15, (np.median(default), np.median(repainted))
    assert np.median(repainted) < 0.9, np.median(repainted)


def test_hard_generation_stays_fast() -> None:
    """The hard style renders the default scene (for its labels) and repaints it: at most about three times the cost."""
    start = time.perf_counter()
    generate(100, 0, seed=5, style="hard")
    assert (time.perf_counter() - start) / 100 < 0.03


def test_write_dataset_writes_the_requested_style(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "hard", n_train=6, n_test=3, seed=2, style="hard")
    expected = generate(6, 3, seed=2, style="hard")
    data = tgs.load(root)
    np.testing.assert_array_equal(data.images, expected.images)
    np.testing.assert_array_equal(data.test_images(), expected.test_images)


def test_data_style_is_a_validated_config_key_with_its_own_cache_folder(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("SALT_BENCH_CACHE", str(tmp_path))
    quick = config.CONFIG_DIR / "quick.yaml"
    default, hard = config.load([quick]), config.load([quick], ["data.style=hard"])
    assert (default.data.style, hard.data.style) == ("default", "hard")
    assert config.protocol_hash(default) != config.protocol_hash(hard)
    # 480 development + 500 holdout images are generated; the default style's folder name has no suffix
    assert source.synthetic_dir(default.data) == tmp_path / "synthetic-n980-t200-s0"
    assert source.synthetic_dir(hard.data) == tmp_path / "synthetic-n980-t200-s0-hard"
    with pytest.raises(BenchError, match="data.style: 'easy' is not one of default, hard"):
        config.load([quick], ["data.style=easy"])
    (style_field,) = [f for f in dataclasses.fields(config.DataConfig) if f.name == "style"]
    assert style_field.metadata["choices"] == synthetic.STYLES  # config must not import the generator to know them


def test_cli_data_synth_writes_the_style(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hard"
    argv = ["data", "synth", "--out", str(out), "--n-train", "5", "--n-test", "2", "--seed", "3", "--style", "hard"]
    assert cli.main(argv) == 0
    np.testing.assert_array_equal(tgs.load(out).images, generate(5, 2, seed=3, style="hard").images)
    assert "train images" in capsys.readouterr().out
