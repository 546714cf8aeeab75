"""Paired comparisons between architectures: bootstrap CI, Wilcoxon, Nadeau-Bengio t-test, Holm.

Every architecture predicts the same out-of-fold images, so comparisons are paired per image (the
per-image difference removes the image difficulty that dominates the variance). Fold scores are not
independent (the training sets overlap), hence the Nadeau-Bengio correction of the fold t-test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

_BOOT_CHUNK = 256  # bootstrap replicates per vectorised block: bounds the (chunk, n) index array


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


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences; 1.0 when no pair differs (no evidence)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    if not np.any(diff != 0):
        return 1.0
    return float(sps.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


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


def compare_to_best(per_image: pd.DataFrame, order: list[str], test_train_ratio: float, *,
                    n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """One row per architecture after the first in ``order`` (the best): paired difference (arch - best).

    ``per_image`` has columns id, fold, arch, seed, score; several seeds are averaged per image first.
    """
    scores = per_image.groupby(["arch", "id"], sort=False)["score"].mean().unstack("arch")
    folds = per_image.groupby(["arch", "fold"], sort=False)["score"].mean().unstack("arch")
    best = order[0]
    rows = []
    for arch in order[1:]:
        paired = scores[[best, arch]].dropna()
        diff = (paired[arch] - paired[best]).to_numpy()
        ci = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
        fold_pair = folds[[best, arch]].dropna()
        t, p_nb = nadeau_bengio((fold_pair[arch] - fold_pair[best]).to_numpy(), test_train_ratio)
        rows.append({"arch": arch, "vs": best, "n_images": len(diff), "diff": ci.mean, "ci_lo": ci.lo,
                     "ci_hi": ci.hi, "wilcoxon_p": wilcoxon_p(diff), "n_folds": len(fold_pair),
                     "nb_t": t, "nb_p": p_nb})
    table = pd.DataFrame(rows, columns=["arch", "vs", "n_images", "diff", "ci_lo", "ci_hi", "wilcoxon_p",
                                        "n_folds", "nb_t", "nb_p"])
    table.insert(table.columns.get_loc("wilcoxon_p") + 1, "wilcoxon_holm", holm(table["wilcoxon_p"].to_numpy()))
    table["nb_holm"] = holm(table["nb_p"].to_numpy())
    table["verdict"] = [_verdict(r, alpha) for r in table.itertuples()]
    return table


def _verdict(row: tuple, alpha: float) -> str:
    """Plain words: the CI decides the direction, Holm-adjusted Wilcoxon decides the significance."""
    if math.isnan(row.wilcoxon_holm):
        return "n/a"
    if row.wilcoxon_holm < alpha and row.ci_hi < 0:
        return "worse than the best"
    if row.wilcoxon_holm < alpha and row.ci_lo > 0:
        return "better than the best"
    return "no significant difference"
