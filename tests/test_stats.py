"""bench.report.stats on synthetic inputs whose answers are known by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.report import stats


def test_bootstrap_identical_arrays_gives_zero_and_contains_zero() -> None:
    a = np.random.default_rng(1).random(500)
    ci = stats.bootstrap_ci(a - a)
    assert (ci.mean, ci.lo, ci.hi) == (0.0, 0.0, 0.0)


def test_bootstrap_constant_shift_is_tight_around_it() -> None:
    a = np.random.default_rng(2).random(300)
    ci = stats.bootstrap_ci((a + 0.25) - a)
    assert ci.mean == pytest.approx(0.25)
    assert ci.lo == pytest.approx(0.25) and ci.hi == pytest.approx(0.25)


def test_bootstrap_matches_normal_theory_and_is_seeded() -> None:
    diff = np.random.default_rng(3).normal(0.1, 1.0, size=2000)
    ci = stats.bootstrap_ci(diff, n_boot=4000, seed=7)
    half = 1.96 * diff.std(ddof=1) / math.sqrt(diff.size)
    assert ci.lo < ci.mean < ci.hi
    assert ci.hi - ci.lo == pytest.approx(2 * half, rel=0.1)
    assert ci.mean - ci.lo == pytest.approx(half, rel=0.15)
    assert stats.bootstrap_ci(diff, n_boot=4000, seed=7) == ci
    assert stats.bootstrap_ci(diff, n_boot=4000, seed=8) != ci


def test_bootstrap_empty_is_nan() -> None:
    ci = stats.bootstrap_ci(np.array([]))
    assert math.isnan(ci.mean) and math.isnan(ci.lo) and math.isnan(ci.hi)


def test_wilcoxon_all_zero_differences_is_one() -> None:
    assert stats.wilcoxon_p(np.zeros(50)) == 1.0


def test_wilcoxon_matches_scipy_and_detects_a_shift() -> None:
    rng = np.random.default_rng(4)
    diff = rng.normal(0.3, 1.0, size=200)
    assert stats.wilcoxon_p(diff) == pytest.approx(sps.wilcoxon(diff).pvalue)
    assert stats.wilcoxon_p(diff) < 1e-3
    assert stats.wilcoxon_p(rng.normal(0.0, 1.0, size=200)) > 0.01


def test_nadeau_bengio_against_hand_computation() -> None:
    d = np.array([0.02, 0.01, 0.03, 0.00, 0.04])
    ratio = 0.25  # 5 folds: n_test / n_train = 1/4
    mean = 0.02
    var = ((0.0) ** 2 + 0.01**2 + 0.01**2 + 0.02**2 + 0.02**2) / 4  # 0.00025
    t_hand = mean / math.sqrt((1 / 5 + 0.25) * var)  # 0.02 / sqrt(0.45 * 0.00025) = 1.8856...
    t, p = stats.nadeau_bengio(d, ratio)
    assert t == pytest.approx(t_hand)
    assert t == pytest.approx(1.885618, rel=1e-5)
    assert p == pytest.approx(2 * sps.t.sf(t_hand, df=4))
    t_naive, _ = sps.ttest_1samp(d, 0.0)
    assert abs(t) < abs(t_naive)  # the correction only ever widens the interval


def test_nadeau_bengio_degenerate_cases() -> None:
    assert all(math.isnan(v) for v in stats.nadeau_bengio(np.array([0.1]), 0.25))
    assert stats.nadeau_bengio(np.zeros(3), 0.5) == (0.0, 1.0)
    t, p = stats.nadeau_bengio(np.full(3, -0.1), 0.5)
    assert t == -math.inf and p == 0.0


def test_holm_on_a_known_vector() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan() -> None:
    out = stats.holm(np.array([0.6, np.nan, 0.3]))
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.6, 0.6])
    np.testing.assert_allclose(stats.holm(np.array([0.6, 0.7])), [1.0, 1.0])
    assert stats.holm(np.array([])).size == 0


def test_fold_ratio() -> None:
    assert stats.fold_ratio(np.repeat(np.arange(5), 20)) == pytest.approx(0.25)
    assert stats.fold_ratio(np.array([0, 0, 1])) == pytest.approx((2 / 1 + 1 / 2) / 2)


def _per_image(scores: dict[str, np.ndarray], folds: np.ndarray) -> pd.DataFrame:
    ids = [f"id{i}" for i in range(len(folds))]
    return pd.concat([pd.DataFrame({"id": ids, "fold": folds, "arch": a, "seed": 0, "score": s})
                      for a, s in scores.items()], ignore_index=True)


def test_compare_to_best_pairs_by_id_and_adjusts() -> None:
    rng = np.random.default_rng(5)
    folds = np.repeat(np.arange(4), 100)
    base = rng.random(400)
    same = _per_image({"best": base, "twin": base, "worse": np.clip(base - 0.3, 0, 1)}, folds)
    # shuffling the rows must not change anything: pairing is by id, not by position
    table = stats.compare_to_best(same.sample(frac=1.0, random_state=0), ["best", "twin", "worse"], 1 / 3)
    twin, worse = table.set_index("arch").loc["twin"], table.set_index("arch").loc["worse"]
    assert twin["diff"] == 0 and twin["ci_lo"] == 0 and twin["ci_hi"] == 0
    assert twin["wilcoxon_p"] == 1.0 and twin["nb_p"] == 1.0
    assert twin["verdict"] == "no significant difference"
    assert worse["ci_hi"] < 0 and worse["wilcoxon_holm"] < 1e-6
    assert worse["wilcoxon_holm"] == pytest.approx(min(1.0, 2 * worse["wilcoxon_p"]))
    assert worse["verdict"] == "worse than the best"
    assert (twin["n_images"], twin["n_folds"]) == (400, 4)


def test_compare_to_best_single_fold_has_no_fold_test() -> None:
    folds = np.zeros(50, dtype=int)
    rng = np.random.default_rng(6)
    table = stats.compare_to_best(_per_image({"a": rng.random(50), "b": rng.random(50)}, folds), ["a", "b"], 0.25)
    assert math.isnan(table["nb_p"].iloc[0]) and math.isnan(table["nb_holm"].iloc[0])
    assert not math.isnan(table["wilcoxon_p"].iloc[0])


def test_compare_to_best_single_architecture_is_empty() -> None:
    table = stats.compare_to_best(_per_image({"a": np.ones(10)}, np.zeros(10, dtype=int)), ["a"], 0.25)
    assert table.empty and "verdict" in table.columns
