"""The verdict on constructed data with known answers: the null, a clear winner, two architectures equivalent
inside the ROPE, a collapsed model, too few models, one seed, the out-of-fold layout, and the variance formula
checked by simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench import stats

ARCHS = ["a", "b", "c", "d"]


def _scores(means: list[float], *, folds: int = 2, seeds: int = 3, images: int = 400, model_sd: float = 0.02,
            image_sd: float = 0.3, residual_sd: float = 0.15, seed: int = 0) -> np.ndarray:
    """(archs, folds, seeds, images) scores from the crossed model: shared image difficulty, a per-model offset
    and per-(model, image) noise."""
    rng = np.random.default_rng(seed)
    a = len(means)
    return (np.asarray(means)[:, None, None, None] + rng.normal(0, image_sd, images)[None, None, None, :]
            + rng.normal(0, model_sd, (a, folds, seeds, 1)) + rng.normal(0, residual_sd, (a, folds, seeds, images)))


def _table(x: np.ndarray, archs: list[str] | None = None, truth_empty: np.ndarray | None = None, **kwargs):
    archs = archs or ARCHS[: x.shape[0]]
    truth_empty = np.zeros(x.shape[-1], bool) if truth_empty is None else truth_empty
    return stats.verdict_table(x, archs, truth_empty=truth_empty, pred_empty=np.zeros(x.shape, bool), **kwargs)


def test_holm() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    out = stats.holm(np.array([0.6, np.nan, 0.3]))
    assert math.isnan(out[1]) and out[2] == pytest.approx(0.6)


def test_a_clear_winner_is_best_and_better_than_every_other() -> None:
    table = _table(_scores([0.80, 0.60, 0.59, 0.58]))
    top = table.iloc[0]
    assert top["arch"] == "a" and top["verdict"] == stats.BEST
    # 2 folds x 3 seeds: the draws are t with the fold's one degree of freedom or so, heavy-tailed by design
    assert top["p_best"] > 0.95 and (top["rank_lo"], top["rank_hi"]) == (1, 1)
    assert top["p_best"] == table["p_best"].max()
    assert table["in_best_set"].tolist() == [True, False, False, False]
    assert all(v == "worse than a" for v in table["verdict"].iloc[1:])
    pairs = table.attrs["pairs"]
    assert len(pairs) == 6 and (pairs.loc[pairs["arch"] == "a", "verdict"] == "better").all()


def test_the_null_makes_no_claim() -> None:
    table = _table(_scores([0.6, 0.6, 0.6, 0.6], seed=3))
    assert table["in_best_set"].all()
    assert (table["verdict"] == stats.BEST_SET.format(n=4)).all()
    assert (table["rank_lo"] == 1).all() and (table["rank_hi"] == 4).all()
    assert not (table.attrs["pairs"]["verdict"] == "better").any()
    assert table["p_best"].sum() == pytest.approx(1.0)


def test_two_architectures_inside_the_rope_are_equivalent() -> None:
    # many models and images, no difference between a and b: the interval lies well inside +-0.01
    x = _scores([0.70, 0.70, 0.50], folds=5, seeds=4, images=2000, model_sd=0.002, residual_sd=0.05, seed=1)
    x[1] = x[0] + 0.001  # b is a plus a constant thousandth: practically the same
    table = _table(x, ["a", "b", "c"])
    pair = table.attrs["pairs"].query("arch == 'b' and other == 'a'").iloc[0]
    assert pair["verdict"] == "equivalent"
    row = table.set_index("arch").loc["a"]
    assert "equivalent to b" in row["verdict"] and row["in_best_set"]
    assert table.set_index("arch").loc["c", "verdict"] == "worse than b"


def test_a_lead_within_training_noise_is_not_claimed() -> None:
    """Images alone would call a 0.02 lead real; a model SD of 0.03 with 6 models does not allow it."""
    x = _scores([0.62, 0.60], model_sd=0.03, residual_sd=0.05, images=2000, seed=2)
    table = _table(x, ["a", "b"])
    pair = table.attrs["pairs"].iloc[0]
    image_only_se = (x[0] - x[1]).mean(axis=(0, 1)).std(ddof=1) / math.sqrt(x.shape[-1])
    assert abs(pair["diff"]) / image_only_se > 4  # a per-image test on these models would be sure
    assert pair["verdict"] == "unresolved" and table["in_best_set"].all()
    assert pair["se"] > 3 * image_only_se


def test_too_few_models_claim_nothing_and_say_how_many_seeds_would() -> None:
    table = _table(_scores([0.66, 0.60, 0.58], seeds=1, model_sd=0.01))
    assert (table["verdict"] == stats.TOO_FEW.format(r=2)).all()
    assert table["p_best"].isna().all() and table["rank_lo"].isna().all()
    assert table.attrs["pairs"].empty
    assert table.attrs["seeds_to_resolve"] is not None and table.attrs["seeds_to_resolve"] >= 2
    assert table["learned"].all()  # learning is judged against no salt, with or without a comparison


def test_one_seed_claims_nothing_however_many_folds() -> None:
    table = _table(_scores([0.8, 0.6], folds=5, seeds=1))
    assert (table["verdict"] == stats.ONE_SEED.format(r=5)).all()
    assert table["p_best"].isna().all()


def test_a_collapsed_model_is_counted_and_unlearned_rows_are_not_compared() -> None:
    images = 300
    truth_empty = np.arange(images) % 2 == 0
    rng = np.random.default_rng(4)
    x = np.empty((3, 2, 3, images))
    pred_empty = np.zeros(x.shape, bool)
    good = np.where(truth_empty, 1.0, 0.8) + rng.normal(0, 0.05, (2, 3, images))
    x[0] = good
    x[1] = good - 0.01
    x[1, 1, 0] = truth_empty  # fold 1, seed 0 of b predicts no salt anywhere
    pred_empty[1, 1, 0] = True
    x[2] = truth_empty  # c never learned
    pred_empty[2] = True
    table = stats.verdict_table(x, ["a", "b", "c"], truth_empty=truth_empty, pred_empty=pred_empty)
    rows = table.set_index("arch")
    assert rows.loc["b", "collapsed"] == 1 and not rows.loc["b", "learned"]
    assert "1 of 6 models did not learn" in rows.loc["b", "verdict"]
    assert rows.loc["c", "verdict"].startswith(stats.NOT_LEARNED) and rows.loc["c", "collapsed"] == 6
    assert math.isnan(rows.loc["c", "p_best"]) and rows.loc["a", "learned"]
    assert set(table.attrs["pairs"][["arch", "other"]].to_numpy().ravel()) == {"a", "b"}


def test_out_of_fold_layout_replicates_are_seeds() -> None:
    folds, seeds, images = 2, 3, 200
    full = _scores([0.7, 0.5], folds=folds, seeds=seeds, images=images)
    fold_of = np.arange(images) % folds
    oof = np.full(full.shape, np.nan)
    for f in range(folds):
        oof[:, f][..., fold_of == f] = full[:, f][..., fold_of == f]
    table = _table(oof, ["a", "b"])
    assert table.attrs["replicate"] == "seed" and table.attrs["n_replicates"] == seeds
    assert table.iloc[0]["verdict"] == stats.BEST
    oof[:, :, :, 0] = 0.5  # image 0 scored by both folds: neither layout
    with pytest.raises(ValueError, match="exactly one fold"):
        _table(oof, ["a", "b"])


def test_fold_and_seed_components_are_separated() -> None:
    rng = np.random.default_rng(5)
    x = _scores([0.6], folds=4, seeds=6, images=300, model_sd=0.0, residual_sd=0.01, seed=6)
    x += rng.normal(0, 0.05, (1, 4, 1, 1))  # a large fold effect, no seed effect
    row = _table(x, ["a"]).iloc[0]
    assert row["fold_sd"] > 0.02 and row["seed_sd"] < 0.01


def test_difference_pairs_models_and_images() -> None:
    x = _scores([0.62, 0.60], seeds=3)
    d = stats.difference(x[0], x[1])
    assert d.claimable and d.n_models == 6 and d.diff == pytest.approx(float((x[0] - x[1]).mean()))
    assert d.ci_lo < d.diff < d.ci_hi
    few = stats.difference(x[0, :, :1], x[1, :, :1])
    assert not few.claimable and math.isnan(few.p)


@pytest.mark.parametrize(("folds", "seeds"), [(2, 3), (5, 3)])
def test_pairwise_test_holds_its_level_under_the_null(folds: int, seeds: int) -> None:
    """300 simulated pairs with fold, seed and model effects and no true difference: the test rejects at most
    at its nominal 5% (plus Monte Carlo error)."""
    rng = np.random.default_rng(7)
    rejected = 0
    for _ in range(300):
        shape = (2, folds, seeds, 300)
        x = (rng.normal(0, 0.3, 300)[None, None, None, :] + rng.normal(0, 0.1, (2, 1, 1, 300))
             + rng.normal(0, 0.01, (2, folds, 1, 1)) + rng.normal(0, 0.01, (2, 1, seeds, 1))
             + rng.normal(0, 0.02, (2, folds, seeds, 1)) + rng.normal(0, 0.15, shape))
        rejected += stats.difference(x[0], x[1]).p < 0.05
    assert rejected / 300 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)
