"""bench.report.stats on synthetic inputs whose answers are known by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import stats


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


def test_permutation_all_zero_differences_is_one() -> None:
    assert stats.paired_permutation_p(np.zeros(50)) == 1.0
    assert stats.paired_permutation_p(np.zeros(50), alternative="greater") == 1.0


def test_permutation_constant_shift_hits_the_monte_carlo_floor() -> None:
    diff = np.full(200, 0.05)  # no sign flip but the identity reaches the observed mean
    assert stats.paired_permutation_p(diff, n_resamples=9999) == pytest.approx(1 / 10000)
    assert stats.paired_permutation_p(diff, n_resamples=999, alternative="greater") == pytest.approx(1 / 1000)
    assert stats.paired_permutation_p(diff, alternative="less") == 1.0


def test_permutation_exact_for_few_pairs_matches_scipy() -> None:
    diff = np.random.default_rng(9).normal(0.4, 1.0, size=10)  # 2**10 flips <= 9999: enumerated
    for alternative in ("two-sided", "greater", "less"):
        ref = sps.permutation_test((diff,), np.mean, permutation_type="samples", alternative=alternative).pvalue
        assert stats.paired_permutation_p(diff, alternative=alternative) == pytest.approx(ref)


def test_permutation_monte_carlo_matches_scipy_and_is_seeded() -> None:
    diff = np.random.default_rng(10).normal(0.12, 1.0, size=300)
    ref = sps.permutation_test((diff,), np.mean, permutation_type="samples", n_resamples=9999, vectorized=True,
                               random_state=0).pvalue
    p = stats.paired_permutation_p(diff, seed=3)
    assert 0.01 < p < 0.5
    assert p == pytest.approx(ref, abs=0.015)
    assert stats.paired_permutation_p(diff, seed=3) == p
    assert stats.paired_permutation_p(diff, seed=4) != p
    towards = "greater" if diff.mean() > 0 else "less"
    assert stats.paired_permutation_p(diff, alternative=towards, seed=3) == pytest.approx(p / 2, abs=0.01)


def test_permutation_tests_the_mean_not_the_median() -> None:
    diff = np.concatenate([np.full(80, 0.1), np.full(40, -1.0)])  # most images up, the mean far down
    assert diff.mean() == pytest.approx(-32 / 120)
    assert stats.paired_permutation_p(diff) < 1e-3
    assert stats.paired_permutation_p(diff, alternative="greater") > 0.99


def _arch(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    return np.clip(rng.random(n) + shift, 0, 1)


def test_rank_bootstrap_clear_winner() -> None:
    rng = np.random.default_rng(11)
    scores = np.stack([_arch(rng, 400, 0.2), _arch(rng, 400, 0.0), _arch(rng, 400, -0.2)])[None]
    ranks = stats.rank_bootstrap(scores, n_boot=500, archs=["a", "b", "c"])
    assert list(ranks.index) == ["a", "b", "c"]
    assert ranks.loc["a", "p_best"] == pytest.approx(1.0)
    assert (ranks.loc["a", "rank_lo"], ranks.loc["a", "rank_hi"]) == (1, 1)
    assert (ranks.loc["c", "rank_lo"], ranks.loc["c", "rank_hi"]) == (3, 3)
    assert ranks["p_best"].sum() == pytest.approx(1.0)


def test_rank_bootstrap_identical_archs_share_first_place() -> None:
    rng = np.random.default_rng(12)
    a = rng.random(300)
    scores = np.stack([a, a, np.clip(a - 0.3, 0, 1)])[None]
    ranks = stats.rank_bootstrap(scores, n_boot=300)
    np.testing.assert_allclose(ranks["p_best"], [0.5, 0.5, 0.0])
    assert ranks[["rank_lo", "rank_hi"]].values.tolist() == [[1, 2], [1, 2], [3, 3]]


def test_rank_bootstrap_pairs_images() -> None:
    # image difficulty dwarfs the gap, but the gap is on every image: only a paired resample sees it
    a = np.random.default_rng(13).random(200) * 0.9 + 0.05
    scores = np.stack([a, a - 0.01])[None]
    ranks = stats.rank_bootstrap(scores, n_boot=300)
    assert ranks["p_best"].tolist() == [1.0, 0.0]


def test_rank_bootstrap_resamples_seeds() -> None:
    rng = np.random.default_rng(14)
    base = rng.random(500) * 0.8 + 0.1
    # a wins on average, but the seeds of both move the mean by far more than the gap
    offsets = np.array([[0.06, -0.05, 0.02], [-0.04, 0.05, -0.03]]).T  # (seed, arch)
    scores = base[None, None, :] + offsets[:, :, None] + rng.normal(0, 0.01, (3, 2, 500))
    pooled = scores.mean(axis=0, keepdims=True)  # same means, training noise hidden
    one = stats.rank_bootstrap(pooled, n_boot=500)
    three = stats.rank_bootstrap(scores, n_boot=500)
    assert (one.loc[0, "rank_lo"], one.loc[0, "rank_hi"]) == (1, 1)
    assert (three.loc[0, "rank_lo"], three.loc[0, "rank_hi"]) == (1, 2)
    assert 0.05 < three.loc[1, "p_best"] < 0.95
    assert stats.rank_bootstrap(scores, n_boot=500).equals(three)


def test_seed_sd() -> None:
    rng = np.random.default_rng(15)
    scores = rng.random((3, 2, 50))
    np.testing.assert_allclose(stats.seed_sd(scores), scores.mean(axis=2).std(axis=0, ddof=1))
    assert np.isnan(stats.seed_sd(scores[:1])).all()


def _empty_case(n: int = 400, empty_share: float = 0.4, seed: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < empty_share


def test_learned_rejects_the_all_empty_prediction() -> None:
    truth_empty = _empty_case()
    scores = truth_empty.astype(float)[None]  # what predicting no salt scores
    ok, p = stats.learned(scores, truth_empty, np.ones_like(scores, dtype=bool))
    assert (ok, p) == (False, 1.0)


def test_learned_needs_salt_found_on_enough_images() -> None:
    truth_empty = _empty_case()
    salt = np.flatnonzero(~truth_empty)
    for share, expected in ((0.96, False), (0.90, True)):
        found = salt[: round(len(salt) * (1 - share))]
        scores = truth_empty.astype(float)
        scores[found] = 1.0  # perfect where it predicts salt, so it beats the all-empty score there
        pred_empty = np.ones(len(truth_empty), dtype=bool)
        pred_empty[found] = False
        ok, p = stats.learned(scores[None], truth_empty, pred_empty[None])
        assert p < 0.05  # significant above empty either way: the share rule decides
        assert ok is expected


def test_learned_accepts_a_working_model_and_averages_seeds() -> None:
    truth_empty = _empty_case()
    rng = np.random.default_rng(17)
    scores = np.where(truth_empty, 0.9, 0.6)[None] + rng.normal(0, 0.05, (2, truth_empty.size))
    ok, p = stats.learned(np.clip(scores, 0, 1), truth_empty, np.zeros(scores.shape, dtype=bool))
    assert ok and p < 1e-3


def _table(scores: np.ndarray, archs: list[str], **kwargs: object) -> pd.DataFrame:
    """verdict_table with no salt in the truth and none predicted empty: every arch with any score learned."""
    scores = np.asarray(scores, dtype=float)
    kwargs = {"truth_empty": np.zeros(scores.shape[2], dtype=bool),
              "pred_empty": np.zeros(scores.shape, dtype=bool), "n_boot": 500, **kwargs}
    return stats.verdict_table(scores, archs, **kwargs)


def _mean_down_median_up(n_seeds: int) -> np.ndarray:
    best = np.concatenate([np.full(80, 0.5), np.full(40, 1.0)])
    other = np.concatenate([np.full(80, 0.6), np.full(40, 0.0)])  # +0.1 on 80 images, -1 on 40
    jitter = np.random.default_rng(18).normal(0, 1e-4, (n_seeds, 2, 1))  # seeds barely differ
    return np.clip(np.stack([best, other])[None] + jitter, 0, 1)


def test_verdict_worse_when_the_mean_is_worse() -> None:
    table = _table(_mean_down_median_up(3), ["best", "other"]).set_index("arch")
    other = table.loc["other"]
    assert table.index.tolist() == ["best", "other"] and table.loc["best", "verdict"] == stats.BEST
    assert other["vs"] == "best"
    assert other["diff"] == pytest.approx(-32 / 120, abs=1e-3)
    assert other["ci_lo"] < other["diff"] < other["ci_hi"] < 0
    assert other["perm_p"] < 1e-3
    assert other["verdict"] == stats.WORSE
    assert table.attrs == {"n_images": 120, "n_seeds": 3}


def test_verdict_one_seed_is_unresolved() -> None:
    other = _table(_mean_down_median_up(1), ["best", "other"]).set_index("arch").loc["other"]
    assert other["perm_holm"] < 0.05 and math.isnan(other["seed_sd"])
    assert other["verdict"] == stats.ONE_SEED


def test_verdict_within_seed_noise() -> None:
    rng = np.random.default_rng(19)
    base = rng.random(600) * 0.8 + 0.1
    seed_shift = np.array([0.03, -0.03, 0.0])[:, None, None]  # seed sd 0.03 for both archs
    scores = base + seed_shift + np.array([0.0, -0.02])[None, :, None]  # a 0.02 gap on every image
    other = _table(scores, ["a", "b"]).set_index("arch").loc["b"]
    assert other["diff"] == pytest.approx(-0.02) and other["perm_holm"] < 1e-3
    assert other["seed_sd"] == pytest.approx(0.03)
    assert other["verdict"] == stats.SEED_NOISE


def test_verdict_identical_archs() -> None:
    a = np.random.default_rng(20).random(200)
    table = _table(np.stack([a, a])[None].repeat(2, axis=0), ["a", "b"])
    twin = table.iloc[1]
    assert (twin["diff"], twin["ci_lo"], twin["ci_hi"], twin["perm_p"]) == (0, 0, 0, 1.0)
    assert twin["verdict"] == stats.NO_DIFFERENCE
    assert table["p_best"].tolist() == [0.5, 0.5]


def test_verdict_table_sorts_and_holm_adjusts_the_learned_only() -> None:
    rng = np.random.default_rng(21)
    n = 300
    truth_empty = rng.random(n) < 0.4
    good = np.where(truth_empty, 0.95, 0.7) + rng.normal(0, 0.1, n)
    scores = np.clip(np.stack([good - 0.01, good - 0.03, truth_empty.astype(float), good]), 0, 1)[None]
    pred_empty = np.zeros(scores.shape, dtype=bool)
    pred_empty[0, 2] = True  # "none" predicts no salt anywhere
    table = stats.verdict_table(scores, ["close", "far", "none", "top"], truth_empty=truth_empty,
                                pred_empty=pred_empty, n_boot=300)
    assert table["arch"].tolist() == ["top", "close", "far", "none"]
    assert table.columns.tolist() == stats.COLUMNS
    assert table["score"].is_monotonic_decreasing
    none = table.set_index("arch").loc["none"]
    assert not none["learned"] and none["verdict"] == stats.NOT_LEARNED
    assert none["vs"] == "" and math.isnan(none["diff"]) and math.isnan(none["perm_holm"])
    compared = table.iloc[1:3]
    np.testing.assert_allclose(compared["perm_holm"], stats.holm(compared["perm_p"].to_numpy()))
    assert (compared["vs"] == "top").all()
    assert math.isnan(table.loc[0, "perm_p"]) and table.loc[0, "vs"] == ""


def test_verdict_when_the_top_score_did_not_learn() -> None:
    truth_empty = np.arange(1000) < 500
    lazy = truth_empty.astype(float)
    lazy[500:520] = 1.0  # salt found, perfectly, on 4% of the salt images: mean 0.52
    real = truth_empty.astype(float)
    real[500:600] = 0.15  # salt found, badly, on 20%: mean 0.515
    worse = truth_empty.astype(float)
    worse[500:600] = 0.05
    pred_empty = np.ones((1, 3, 1000), dtype=bool)
    pred_empty[0, 0, 500:520] = False
    pred_empty[0, 1:, 500:600] = False
    table = stats.verdict_table(np.stack([lazy, real, worse])[None], ["lazy", "real", "worse"],
                                truth_empty=truth_empty, pred_empty=pred_empty, n_boot=300).set_index("arch")
    assert table.index.tolist() == ["lazy", "real", "worse"]
    assert table.loc["lazy", "verdict"] == stats.NOT_LEARNED and table.loc["lazy", "learned_p"] < 0.05
    assert table.loc["real", "verdict"] == stats.BEST and table.loc["real", "vs"] == ""
    assert table.loc["worse", "vs"] == "real"
    assert table.loc["worse", "diff"] == pytest.approx(-0.1 * 100 / 1000)


def test_verdict_nadeau_bengio_needs_five_folds() -> None:
    rng = np.random.default_rng(22)
    a = rng.random(500)
    b = np.clip(a - 0.02 + rng.normal(0, 0.05, 500), 0, 1)
    scores = np.stack([a, b])[None]
    two = _table(scores, ["a", "b"], image_folds=np.arange(500) % 2).iloc[1]
    assert math.isnan(two["nb_t"]) and math.isnan(two["nb_p"])
    folds = np.arange(500) % 5
    five = _table(scores, ["a", "b"], image_folds=folds).iloc[1]
    fold_diffs = [(b - a)[folds == k].mean() for k in range(5)]
    assert (five["nb_t"], five["nb_p"]) == pytest.approx(stats.nadeau_bengio(np.array(fold_diffs), 0.25))
    given = _table(scores, ["a", "b"], image_folds=folds, test_train_ratio=0.5).iloc[1]
    assert given["nb_t"] == pytest.approx(stats.nadeau_bengio(np.array(fold_diffs), 0.5)[0])
    assert math.isnan(_table(scores, ["a", "b"]).iloc[1]["nb_p"])


def test_verdict_single_architecture() -> None:
    table = _table(np.random.default_rng(23).random((1, 1, 50)), ["only"])
    assert len(table) == 1 and table.loc[0, "verdict"] == stats.BEST and table.loc[0, "p_best"] == 1.0


def test_verdict_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="scores"):
        _table(np.zeros((1, 2, 10)), ["a"])
    with pytest.raises(ValueError, match="pred_empty"):
        stats.verdict_table(np.zeros((1, 1, 10)), ["a"], truth_empty=np.zeros(9, dtype=bool),
                            pred_empty=np.zeros((1, 1, 10), dtype=bool))
