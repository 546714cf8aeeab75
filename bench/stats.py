"""The verdict: does an architecture's mean per-image score differ from the best one's, and is it real?

Every test here is of the statistic the leaderboard ranks, the mean per-image TGS score. Every
architecture and seed predicts the same images, so comparisons are paired per image (the per-image
difference removes the image difficulty that dominates the variance): a sign-flip permutation test
and a bootstrap CI of the mean difference, Holm-adjusted across architectures. Seeds are a second
level of noise: the rank bootstrap resamples them, and a significant lead smaller than twice the
seed spread is left unresolved. Fold scores are not independent (the training sets overlap), hence
the Nadeau-Bengio correction of the fold t-test, shown only when there are enough folds to mean
something.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

_BOOT_CHUNK = 256  # bootstrap replicates per vectorised block: bounds the (chunk, n) index array
_FLIP_CELLS = 4_000_000  # sign-flip resamples x images per vectorised block (32 MB of float64)
_MIN_NB_FOLDS = 5  # fewer folds give a t-test with too few degrees of freedom to be worth showing
_EMPTY_SHARE = 0.95  # predicting no salt on this share of the salt images is not having learned

NOT_LEARNED = "did not learn (no better than predicting no salt)"
NO_DIFFERENCE = "no significant difference"
ONE_SEED = "unresolved: one seed, training noise unmeasured"
SEED_NOISE = "unresolved: within seed noise"
WORSE = "worse than the best"
BEST = "best"

COLUMNS = ["arch", "score", "seed_sd", "p_best", "rank_lo", "rank_hi", "learned", "learned_p", "vs", "diff",
           "ci_lo", "ci_hi", "perm_p", "perm_holm", "nb_t", "nb_p", "verdict"]


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float


def bootstrap_ci(diff: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap CI of the mean of ``diff``; seeded so a report is reproducible."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        stop = min(start + _BOOT_CHUNK, n_boot)
        idx = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(diff.mean()), float(lo), float(hi))


def paired_permutation_p(diff: np.ndarray, *, n_resamples: int = 9999, seed: int = 0,
                         alternative: str = "two-sided") -> float:
    """Sign-flip permutation p of the mean of paired differences; 1.0 when no pair differs.

    Under the null each pair's sign is exchangeable, so flipping signs at random gives the null
    distribution of the mean. Exact (all 2**n flips) when that is no more than ``n_resamples``;
    otherwise Monte Carlo with the observed statistic counted once, (hits + 1) / (n_resamples + 1),
    so p is never 0. Two-sided compares |mean| (the sign-flip null is symmetric). Hand-vectorised
    because ``scipy.stats.permutation_test`` takes about 6.5 s per test at 4000 images.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', not {alternative!r}")
    d = np.asarray(diff, dtype=np.float64).ravel()
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    n = d.size
    observed = d.mean()
    # float round-off must not split flips whose means are equal in exact arithmetic
    tol = 1e-9 * np.abs(d).mean()

    def hits(means: np.ndarray) -> int:
        if alternative == "greater":
            return int(np.count_nonzero(means >= observed - tol))
        if alternative == "less":
            return int(np.count_nonzero(means <= observed + tol))
        return int(np.count_nonzero(np.abs(means) >= abs(observed) - tol))

    # a flip vector of bits b gives mean(s * d) with s = 2b - 1, i.e. (2 b.d - sum d) / n
    total = d.sum()
    if 2**n <= n_resamples:
        bits = (np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)) & 1
        return hits((2 * (bits @ d) - total) / n) / 2**n
    rng = np.random.default_rng(seed)
    chunk = max(1, _FLIP_CELLS // n)
    count = 0
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        bits = np.unpackbits(rng.integers(0, 256, size=(rows, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
        count += hits((2 * (bits.astype(np.float64) @ d) - total) / n)
    return (count + 1) / (n_resamples + 1)


def rank_bootstrap(scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                   archs: Sequence[str] | None = None) -> pd.DataFrame:
    """P(best) and a rank interval per architecture from a joint paired bootstrap.

    ``scores`` is (n_seeds, n_archs, n_images). Each replicate draws seeds with replacement (when
    there are several, so training noise counts) and then images with replacement, the same draw for
    every architecture (pairing), and ranks the architectures' means (1 = best). ``p_best`` shares a
    tie for first equally; ranks break ties at random so two identical architectures span [1, 2].
    """
    x = np.asarray(scores, dtype=np.float64)
    n_seeds, n_archs, n_images = x.shape
    rng = np.random.default_rng(seed)
    p_best = np.zeros(n_archs)
    ranks = np.empty((n_boot, n_archs), dtype=np.int64)
    for start in range(0, n_boot, _BOOT_CHUNK):
        rows = min(_BOOT_CHUNK, n_boot - start)
        offsets = np.arange(rows)[:, None]
        image_idx = rng.integers(0, n_images, size=(rows, n_images))
        image_w = np.bincount((image_idx + offsets * n_images).ravel(), minlength=rows * n_images)
        image_w = image_w.reshape(rows, n_images) / n_images
        if n_seeds > 1:
            seed_idx = rng.integers(0, n_seeds, size=(rows, n_seeds))
            seed_w = np.bincount((seed_idx + offsets * n_seeds).ravel(), minlength=rows * n_seeds)
            seed_w = seed_w.reshape(rows, n_seeds) / n_seeds
        else:
            seed_w = np.ones((rows, 1))
        # mean over the drawn seeds and images = seed weights . scores . image weights
        means = np.einsum("bs,sab->ba", seed_w, x @ image_w.T)
        top = means == means.max(axis=1, keepdims=True)
        p_best += (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
        order = np.lexsort((rng.random(means.shape), -means), axis=1)
        np.put_along_axis(ranks[start:start + rows], order, np.arange(1, n_archs + 1)[None, :], axis=1)
    tail = (1 - level) / 2
    index = pd.Index(list(archs) if archs is not None else range(n_archs), name="arch")
    return pd.DataFrame({"p_best": p_best / n_boot,
                         "rank_lo": np.quantile(ranks, tail, axis=0, method="lower").astype(int),
                         "rank_hi": np.quantile(ranks, 1 - tail, axis=0, method="higher").astype(int)}, index=index)


def seed_sd(scores: np.ndarray) -> np.ndarray:
    """Per architecture: std (ddof=1) over seeds of its mean score, the training noise; NaN with one seed."""
    means = np.asarray(scores, dtype=np.float64).mean(axis=2)
    if means.shape[0] < 2:
        return np.full(means.shape[1], math.nan)
    return means.std(axis=0, ddof=1)


def learned(arch_scores: np.ndarray, truth_empty: np.ndarray, pred_empty: np.ndarray, *, alpha: float = 0.05,
            seed: int = 0) -> tuple[bool, float]:
    """Whether an architecture beats predicting no salt anywhere; returns (learned, one-sided p).

    The all-empty prediction scores 1 on empty-truth images and 0 elsewhere, so on a set rich in
    empty images it can look competitive. Not learned: not significantly above it per image
    (one-sided sign-flip test of the seed-mean difference), or predicting empty on at least 95% of
    the salt images (a model that found a handful of easy masks has not learned to segment).
    """
    truth_empty = np.asarray(truth_empty, dtype=bool)
    pred_empty = np.asarray(pred_empty, dtype=bool)
    diff = np.asarray(arch_scores, dtype=np.float64).mean(axis=0) - truth_empty
    p = paired_permutation_p(diff, seed=seed, alternative="greater")
    salt = ~truth_empty
    mostly_empty = bool(salt.any()) and pred_empty[:, salt].mean() >= _EMPTY_SHARE
    return bool(p < alpha and not mostly_empty), p


def nadeau_bengio(fold_diffs: np.ndarray, test_train_ratio: float) -> tuple[float, float]:
    """Corrected resampled t-test over K folds: (t, two-sided p); NaN with fewer than two folds.

    The fold variance is inflated by (1/K + n_test/n_train) instead of 1/K because folds share
    training images (Nadeau & Bengio, 2003).
    """
    d = np.asarray(fold_diffs, dtype=np.float64)
    k = d.size
    if k < 2:
        return math.nan, math.nan
    mean = d.mean()
    var = d.var(ddof=1) if np.ptp(d) > 0 else 0.0  # equal differences: exactly zero, not 1e-34
    se = math.sqrt((1 / k + test_train_ratio) * var)
    if se == 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / se
    return float(t), float(2 * sps.t.sf(abs(t), df=k - 1))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count as tests)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def fold_ratio(folds: np.ndarray) -> float:
    """Mean n_test/n_train over the folds of a K-fold assignment (one fold index per image)."""
    sizes = np.bincount(np.asarray(folds, dtype=np.int64))
    sizes = sizes[sizes > 0]
    return float(np.mean(sizes / (sizes.sum() - sizes)))


def verdict_table(scores: np.ndarray, archs: Sequence[str], *, truth_empty: np.ndarray, pred_empty: np.ndarray,
                  image_folds: np.ndarray | None = None, test_train_ratio: float = math.nan, alpha: float = 0.05,
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per architecture, best mean score first, with the evidence for and against each rank.

    ``scores`` and ``pred_empty`` are (n_seeds, n_archs, n_images) over the same images for every
    architecture and seed; ``truth_empty`` is (n_images,). Architectures that did not learn are
    ranked but not compared; the others are compared (paired per image, seeds averaged first) with
    the best of them, the ``best`` row. Intervals are at level 1 - alpha. The Nadeau-Bengio test
    needs ``image_folds`` with at least 5 folds; ``test_train_ratio`` defaults to the folds' own.
    ``attrs`` carries n_images and n_seeds.
    """
    x = np.asarray(scores, dtype=np.float64)
    pred_empty = np.asarray(pred_empty, dtype=bool)
    truth_empty = np.asarray(truth_empty, dtype=bool)
    if x.ndim != 3 or x.shape[1] != len(archs):
        raise ValueError(f"scores must be (n_seeds, {len(archs)} archs, n_images), got {x.shape}")
    if pred_empty.shape != x.shape or truth_empty.shape != x.shape[2:]:
        raise ValueError(f"pred_empty {pred_empty.shape} and truth_empty {truth_empty.shape} do not match scores {x.shape}")
    n_seeds, n_archs, n_images = x.shape
    per_image = x.mean(axis=0)  # (n_archs, n_images): seeds averaged per image
    mean = per_image.mean(axis=1)
    sd = seed_sd(x)
    ranks = rank_bootstrap(x, n_boot=n_boot, seed=seed, level=1 - alpha)
    fits = [learned(x[:, a], truth_empty, pred_empty[:, a], alpha=alpha, seed=seed) for a in range(n_archs)]
    ok = np.array([f[0] for f in fits])

    folds = None if image_folds is None else np.asarray(image_folds, dtype=np.int64)
    n_folds = 0 if folds is None else np.unique(folds).size
    if n_folds >= _MIN_NB_FOLDS and math.isnan(test_train_ratio):
        test_train_ratio = fold_ratio(folds)

    order = np.argsort(-mean, kind="stable")
    ref = next((a for a in order if ok[a]), None)
    rows = []
    for a in order:
        row = {"arch": archs[a], "score": mean[a], "seed_sd": sd[a], "p_best": ranks["p_best"].iloc[a],
               "rank_lo": ranks["rank_lo"].iloc[a], "rank_hi": ranks["rank_hi"].iloc[a], "learned": bool(ok[a]),
               "learned_p": fits[a][1], "vs": "", "diff": math.nan, "ci_lo": math.nan, "ci_hi": math.nan,
               "perm_p": math.nan, "nb_t": math.nan, "nb_p": math.nan}
        if ok[a] and a != ref:
            diff = per_image[a] - per_image[ref]
            ci = bootstrap_ci(diff, n_boot=n_boot, level=1 - alpha, seed=seed)
            row.update(vs=archs[ref], diff=ci.mean, ci_lo=ci.lo, ci_hi=ci.hi, perm_p=paired_permutation_p(diff, seed=seed))
            if n_folds >= _MIN_NB_FOLDS:
                sizes = np.bincount(folds)
                fold_diffs = np.bincount(folds, weights=diff)[sizes > 0] / sizes[sizes > 0]
                row["nb_t"], row["nb_p"] = nadeau_bengio(fold_diffs, test_train_ratio)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(table.columns.get_loc("perm_p") + 1, "perm_holm", holm(table["perm_p"].to_numpy()))
    table["verdict"] = [_verdict(r, a == ref, n_seeds, alpha, sd[ref] if ref is not None else math.nan)
                        for r, a in zip(table.itertuples(), order)]
    table = table[COLUMNS]
    table.attrs.update(n_images=n_images, n_seeds=n_seeds)
    return table


def _verdict(row: tuple, is_ref: bool, n_seeds: int, alpha: float, ref_sd: float) -> str:
    """Plain words, in order: learned at all, significant after Holm, larger than the training noise."""
    if not row.learned:
        return NOT_LEARNED
    if is_ref:
        return BEST
    if not row.perm_holm < alpha:
        return NO_DIFFERENCE
    if n_seeds == 1:
        return ONE_SEED
    if abs(row.diff) < 2 * max(row.seed_sd, ref_sd):
        return SEED_NOISE
    return WORSE
