"""The verdict: which architecture is best, by how much, and how sure, with a trained model as the unit of evidence.

The estimand of a row is the expected TGS score of *one model trained by the protocol* on an image from the
population the holdout was drawn from. Two things vary and both count: the trained model (a replicate: one
(fold, seed) model, or one seed's cross-fitted out-of-fold prediction when there is no holdout) and the image.
Every replicate of every architecture scores the same images and replicates are paired across architectures
(same training images, same augmentation stream), so a difference between two architectures is a replicates x
images matrix with crossed random effects::

    D[r, i] = delta + u_r + v_i + e_ri

and the variance of its mean is ``s_u^2 / R + s_v^2 / I + s_e^2 / (R I)``, estimated from the ANOVA mean squares
(``Crossed``: the model part from the fold and seed mean squares, since a fold's models share a training set and a
seed's share initial weights; Searle, Casella & McCulloch, *Variance Components*, 1992, ch. 4), with the model
part's degrees of freedom (Satterthwaite, 1946, over fold and seed): with few trained models they are few, so a
one-run lead is not called real. All architectures are
estimated jointly (the mean squares are covariance matrices), so every claim below comes from one model:

- ``learned``: every trained model of the architecture beats predicting no salt anywhere on the holdout images
  (one-sided, per model: a claim about these models); an architecture most of whose models did not learn is not
  compared;
- pairwise *better / worse* verdicts: two-sided t tests of every pair, Holm-adjusted over all pairs, so the
  family-wise rate of any false better/worse claim is at most ``alpha``;
- *equivalent*: the simultaneous (Bonferroni) two one-sided tests put the difference inside the region of
  practical equivalence ``+-rope``;
- the confidence set for the best: the architectures no other is shown better than; rank intervals: one plus
  the number shown better, to the number compared minus the number shown worse (simultaneous, as the
  pairwise claims are);
- ``p_best``: the share of draws from the estimated joint distribution of the means (multivariate t) in which
  an architecture is the highest.

With fewer than ``MIN_REPLICATES`` replicates per architecture no comparison is claimed. The method is checked
by simulation in ``benchmarks/verdict_calibration.py``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

MIN_REPLICATES = 3  # fewer trained models per architecture leave training noise with one or two degrees of freedom
ROPE = 0.01  # region of practical equivalence, in TGS points (README: "The verdict")
_EMPTY_SHARE = 0.95  # a model predicting no salt on this share of the salt images did not learn to segment
_DRAWS = 20_000  # multivariate-t draws for P(best)

TOO_FEW = "too few trained models ({r}) to compare"
ONE_SEED = "one seed: its shared effect on all {r} models is unmeasured, no comparison"
NOT_LEARNED = "did not learn (no better than predicting no salt)"
BEST = "best: better than every other"
BEST_SET = "in the best set of {n}"
ONLY = "best: the only architecture that learned"
WORSE = "worse than {other}"

COLUMNS = ["arch", "score", "se", "ci_lo", "ci_hi", "n_models", "collapsed", "learned", "learned_p", "p_best",
           "rank_lo", "rank_hi", "in_best_set", "image_sd", "replicate_sd", "fold_sd", "seed_sd", "verdict"]
PAIR_COLUMNS = ["arch", "other", "diff", "se", "df", "ci_lo", "ci_hi", "p", "p_holm", "verdict"]


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


# ------------------------------------------------------------------------------------------ replicates x images


def replicates(scores: np.ndarray) -> tuple[np.ndarray, str]:
    """(A, K, S, I) per-image scores, NaN where not scored -> (A, folds, seeds, I) with no NaN, and what one
    trained model (replicate) is.

    Holdout layout (every (fold, seed) model scored every image): a replicate is a (fold, seed) model. Out-of-fold
    layout (every image scored by exactly one fold per seed): a replicate is a seed's cross-fitted prediction, so
    the folds collapse to one.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"scores must be (archs, folds, seeds, images), got {x.shape}")
    seen = ~np.isnan(x)
    if seen.all():
        return x, "model"
    if (seen.sum(axis=1) == 1).all():
        return np.nansum(x, axis=1, keepdims=True), "seed"
    raise ValueError("scores must be scored by every (fold, seed) on every image (holdout) or by exactly one fold "
                     "per seed and image (out-of-fold)")


def _psd(m: np.ndarray) -> np.ndarray:
    """The nearest positive semi-definite matrix (negative eigenvalues set to 0): variance components are >= 0."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.clip(w, 0, None)) @ v.T


def _outer(d: np.ndarray, dof: int) -> np.ndarray:
    """Sum of squares and products over the last axis of (A, n) deviations, per degree of freedom."""
    return d @ d.T / max(dof, 1)


@dataclass(frozen=True)
class Crossed:
    """Mean squares of (A, folds, seeds, images) scores as A x A matrices, all factors random and crossed.

    The trained-model part of a mean's variance comes from the (fold, seed) table of model means: with both
    factors varied, ``(MS_fold + MS_seed) / (K S I)`` (fold and seed main effects are shared by models, so the
    models are not independent; see ``_model_part``); with one, the one-way ``MS_model / (R I)``. The image part is
    ``(MS_image - MS_residual) / (R I)`` of the models x images table. A contrast ``c`` (e.g. one architecture
    minus another) gives each mean square as ``c' M c``.
    """

    n_folds: int
    n_seeds: int
    n_img: int
    means: np.ndarray  # (A,)
    model_means: np.ndarray  # (A, R), fold-major
    fold: np.ndarray | None  # K - 1 degrees of freedom (None unless folds and seeds both vary)
    seed: np.ndarray | None  # S - 1
    inter: np.ndarray | None  # (K - 1)(S - 1)
    model: np.ndarray  # R - 1: the one-way mean square of models
    img: np.ndarray  # I - 1
    res: np.ndarray  # (R - 1)(I - 1)

    @classmethod
    def of(cls, x4: np.ndarray) -> Crossed:
        a, k, s, i = x4.shape
        r = k * s
        x = x4.reshape(a, r, i)
        grand = x.mean(axis=(1, 2))
        rows, cols = x.mean(axis=2), x.mean(axis=1)
        e = (x - rows[:, :, None] - cols[:, None, :] + grand[:, None, None]).reshape(a, -1)
        model = i * _outer(rows - grand[:, None], r - 1)
        fold = seed = inter = None
        if k > 1 and s > 1:
            table = rows.reshape(a, k, s)
            fm, sm = table.mean(axis=2) - grand[:, None], table.mean(axis=1) - grand[:, None]
            rt = (table - fm[:, :, None] - sm[:, None, :] - grand[:, None, None]).reshape(a, -1)
            fold, seed = i * s * _outer(fm, k - 1), i * k * _outer(sm, s - 1)
            inter = i * _outer(rt, (k - 1) * (s - 1))
        return cls(k, s, i, grand, rows, fold, seed, inter, model, r * _outer(cols - grand[:, None], i - 1),
                   _outer(e, (r - 1) * (i - 1)))

    @property
    def n_rep(self) -> int:
        return self.n_folds * self.n_seeds

    def _model_part(self, c: np.ndarray) -> tuple[float, float]:
        """(variance x R I, degrees of freedom) of the trained-model part.

        With folds and seeds crossed, ``MS_fold + MS_seed`` (the interaction is not subtracted): each main effect
        is measured with K - 1 or S - 1 degrees of freedom, and subtracting or flooring such a noisy estimate
        makes the variance too small just when a large effect was measured small by chance. Keeping the
        interaction costs a little variance. Its degrees of freedom are Satterthwaite's for the two terms, between
        the smaller factor's and K + S - 2."""
        if self.fold is None:
            return float(c @ self.model @ c), self.n_rep - 1
        ms_f, ms_s = float(c @ self.fold @ c), float(c @ self.seed @ c)
        return ms_f + ms_s, _satterthwaite([(ms_f, self.n_folds - 1), (ms_s, self.n_seeds - 1)])

    def variance(self, c: np.ndarray) -> tuple[float, float]:
        """Variance of the contrast's mean over models and images, and its degrees of freedom: those of the
        trained-model part whenever it is not zero. Satterthwaite's combination would credit the image part's
        hundreds of degrees of freedom whenever a model part estimated with one or two happens to come out small,
        and then calls differences real far more often than it says (``benchmarks/verdict_calibration.py``)."""
        r, i = self.n_rep, self.n_img
        model, model_df = self._model_part(c)
        image = max(float(c @ self.img @ c) - float(c @ self.res @ c), 0.0)
        total = model + image
        if total <= 0:
            return 0.0, math.inf
        return total / (r * i), (max(model_df, 1) if model > 0 else i - 1)

    def covariance(self) -> np.ndarray:
        """Joint covariance of the A means, each variance component projected onto positive semi-definite matrices."""
        model = self.model if self.fold is None else self.fold + self.seed
        return (model + _psd(self.img - self.res)) / (self.n_rep * self.n_img)

    def components(self, c: np.ndarray) -> tuple[float, float, float, float]:
        """(image, model, fold, seed) SDs of a contrast's effects; fold and seed NaN unless both vary."""
        ms_m, ms_i, ms_e = (float(c @ m @ c) for m in (self.model, self.img, self.res))
        image = math.sqrt(max(ms_i - ms_e, 0.0) / self.n_rep)
        model = math.sqrt(max(ms_m - ms_e, 0.0) / self.n_img)
        if self.fold is None:
            return image, model, math.nan, math.nan
        ms_f, ms_s, ms_fs = (float(c @ m @ c) for m in (self.fold, self.seed, self.inter))
        return (image, model, math.sqrt(max(ms_f - ms_fs, 0.0) / (self.n_seeds * self.n_img)),
                math.sqrt(max(ms_s - ms_fs, 0.0) / (self.n_folds * self.n_img)))


def _satterthwaite(terms: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of mean squares (value, dof) (Satterthwaite, 1946)."""
    total = sum(m for m, _ in terms)
    parts = sum(m * m / d for m, d in terms if d > 0)
    return total * total / parts if parts > 0 else math.inf


# ------------------------------------------------------------------------------------------------ the verdict


def per_model_learned(scores: np.ndarray, truth_empty: np.ndarray, pred_empty: np.ndarray,
                      alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per trained model (R, I inputs): its one-sided p of beating predicting no salt on these images (a t test of
    the per-image differences), and whether it did not learn: not significantly better, or no salt on 95% of the
    salt images. A claim about each trained model, so the images are its only noise."""
    truth_empty = np.asarray(truth_empty, dtype=bool)
    diff = scores - truth_empty[None, :]
    n = diff.shape[1]
    sd = diff.std(axis=1, ddof=1) if n > 1 else np.zeros(diff.shape[0])
    mean = diff.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(sd > 0, sps.t.sf(mean / sd * math.sqrt(n), max(n - 1, 1)), np.where(mean > 0, 0.0, 1.0))
    lazy = p >= alpha
    salt = ~truth_empty
    if salt.any():
        lazy |= pred_empty[:, salt].mean(axis=1) >= _EMPTY_SHARE
    return p, lazy


def _pairs(ms: Crossed, idx: list[int], archs: Sequence[str], alpha: float, rope: float) -> pd.DataFrame:
    """Every pair of the compared architectures (higher mean first): difference, t test, Holm, verdict."""
    rows = []
    for n, a in enumerate(idx):
        for b in idx[n + 1:]:
            first, second = (a, b) if ms.means[a] >= ms.means[b] else (b, a)
            c = np.zeros(len(archs))
            c[first], c[second] = 1.0, -1.0
            var, df = ms.variance(c)
            se = math.sqrt(var)
            diff = float(ms.means[first] - ms.means[second])
            if se > 0:
                p = float(2 * sps.t.sf(abs(diff) / se, df))
                half = float(sps.t.ppf(1 - alpha / 2, df)) * se
            else:
                p, half = (0.0 if diff else 1.0), 0.0
            rows.append({"arch": archs[first], "other": archs[second], "diff": diff, "se": se, "df": df,
                         "ci_lo": diff - half, "ci_hi": diff + half, "p": p})
    table = pd.DataFrame(rows, columns=PAIR_COLUMNS[:-2])
    table["p_holm"] = holm(table["p"].to_numpy())
    m = max(len(table), 1)
    verdicts = []
    for row in table.itertuples():
        tost = float(sps.t.ppf(1 - alpha / m, row.df)) * row.se if row.se > 0 else 0.0
        if abs(row.diff) + tost < rope:  # inside the ROPE: a difference too small to matter, significant or not
            verdicts.append("equivalent")
        elif row.p_holm < alpha:
            verdicts.append("better")
        else:
            verdicts.append("unresolved")
    table["verdict"] = verdicts
    return table[PAIR_COLUMNS]


def _p_best(ms: Crossed, idx: list[int], df: float, n_draws: int, seed: int) -> np.ndarray:
    """Share of multivariate-t draws of the compared means in which each is the highest (ties shared)."""
    cov = ms.covariance()[np.ix_(idx, idx)]
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    root = v * np.sqrt(np.clip(w, 0, None))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_draws, len(idx))) @ root.T
    if math.isfinite(df):
        z *= np.sqrt(df / rng.chisquare(df, size=(n_draws, 1)))
    draws = ms.means[idx][None, :] + z
    top = draws == draws.max(axis=1, keepdims=True)
    return (top / top.sum(axis=1, keepdims=True)).mean(axis=0)


def seeds_to_resolve(ms: Crossed, first: int, second: int, n_pairs: int, alpha: float, limit: int = 100) -> int | None:
    """How many seeds (each with the run's folds) would make the observed gap between two architectures significant
    at Holm's first step, from the measured variance components; None when not even ``limit`` would."""
    c = np.zeros(ms.means.size)
    c[first], c[second] = 1.0, -1.0
    gap = abs(float(c @ ms.means))
    model_ms, _ = ms._model_part(c)
    per_model = model_ms * ms.n_rep / ms.n_img  # the model part of one mean's variance times R
    image = max(float(c @ ms.img @ c) - float(c @ ms.res @ c), 0.0) / (ms.n_rep * ms.n_img)
    for seeds in range(1, limit + 1):
        r = ms.n_folds * seeds
        var = per_model / r + image
        if var > 0 and r >= MIN_REPLICATES and gap / math.sqrt(var) > sps.t.ppf(1 - alpha / (2 * n_pairs), r - 1):
            return seeds
    return None


@dataclass(frozen=True)
class Difference:
    """A paired difference of expected scores (B - A) with its uncertainty from models and images."""

    diff: float
    se: float
    df: float
    ci_lo: float
    ci_hi: float
    p: float
    n_models: int
    n_images: int
    claimable: bool  # enough trained models (and seeds) for a claim


def difference(b: np.ndarray, a: np.ndarray, *, alpha: float = 0.05,
               min_replicates: int = MIN_REPLICATES) -> Difference:
    """B - A for two (folds, seeds, images) score arrays paired by model and image (NaN where not scored, in the
    same places), by the same crossed model as ``verdict_table``; p and CI are NaN when no claim can be made."""
    x, unit = replicates(np.stack([np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)]))
    ms = Crossed.of(x)
    var, df = ms.variance(np.array([1.0, -1.0]))
    diff = float(ms.means[0] - ms.means[1])
    claimable = ms.n_rep >= min_replicates and (unit == "seed" or ms.n_seeds >= 2)
    if not claimable:
        return Difference(diff, math.nan, math.nan, math.nan, math.nan, math.nan, ms.n_rep, ms.n_img, False)
    se = math.sqrt(var)
    if se == 0:
        return Difference(diff, 0.0, df, diff, diff, 0.0 if diff else 1.0, ms.n_rep, ms.n_img, True)
    half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    return Difference(diff, se, df, diff - half, diff + half, float(2 * sps.t.sf(abs(diff) / se, df)), ms.n_rep,
                      ms.n_img, True)


def verdict_table(scores: np.ndarray, archs: Sequence[str], *, truth_empty: np.ndarray, pred_empty: np.ndarray,
                  alpha: float = 0.05, rope: float = ROPE, min_replicates: int = MIN_REPLICATES,
                  n_draws: int = _DRAWS, seed: int = 0) -> pd.DataFrame:
    """One row per architecture, highest mean first, with every claim the evidence supports.

    ``scores`` and ``pred_empty`` are (archs, folds, seeds, images): per-image TGS scores and "predicted no salt",
    NaN / False where a model did not score an image (see ``replicates``); ``truth_empty`` is (images,). The
    pairwise table is ``attrs["pairs"]``; ``attrs`` also carries n_images, n_replicates, replicate (what one is),
    rope, alpha and seeds_to_resolve (for the top gap, when it is unresolved).
    """
    archs = list(archs)
    x4 = np.asarray(scores, dtype=np.float64)
    if x4.ndim != 4 or x4.shape[0] != len(archs):
        raise ValueError(f"scores must be ({len(archs)} archs, folds, seeds, images), got {x4.shape}")
    empty4 = np.asarray(pred_empty, dtype=bool)
    truth_empty = np.asarray(truth_empty, dtype=bool)
    if empty4.shape != x4.shape or truth_empty.shape != x4.shape[3:]:
        raise ValueError(f"pred_empty {empty4.shape} and truth_empty {truth_empty.shape} do not match scores {x4.shape}")
    x, unit = replicates(x4)
    empty = replicates(np.where(np.isnan(x4), np.nan, empty4.astype(np.float64)))[0].astype(bool)
    n_archs, n_folds, n_seeds, n_img = x.shape
    n_rep = n_folds * n_seeds
    ms = Crossed.of(x)
    rows = []
    for a in range(n_archs):
        own = np.zeros(n_archs)
        own[a] = 1.0
        var, df = ms.variance(own)
        se = math.sqrt(var)
        half = float(sps.t.ppf(1 - alpha / 2, df)) * se if se > 0 else 0.0
        model_p, lazy = per_model_learned(x[a].reshape(n_rep, n_img), truth_empty, empty[a].reshape(n_rep, n_img),
                                          alpha)
        learned_p = float(model_p.max())  # every model beat no salt: an intersection test at level alpha
        image_sd, model_sd, fold_sd, seed_sd = ms.components(own)
        if unit == "seed" and n_rep >= 2:
            seed_sd = model_sd
        rows.append({"arch": archs[a], "score": float(ms.means[a]), "se": se, "ci_lo": ms.means[a] - half,
                     "ci_hi": ms.means[a] + half, "n_models": n_rep, "collapsed": int(lazy.sum()),
                     "learned_p": learned_p, "image_sd": image_sd, "replicate_sd": model_sd,
                     "fold_sd": fold_sd, "seed_sd": seed_sd})
    table = pd.DataFrame(rows)
    # a seed's initial weights are shared by its folds' models: with one seed that effect is unmeasurable
    one_seed = unit == "model" and n_seeds < 2
    enough = n_rep >= min_replicates and not one_seed
    # compared: most of its models learned (its expected score then counts the ones that did not)
    compared = [a for a in range(n_archs) if enough and 2 * table.at[a, "collapsed"] < n_rep]
    table["learned"] = table["collapsed"] == 0
    pairs = _pairs(ms, compared, archs, alpha, rope) if len(compared) > 1 else pd.DataFrame(columns=PAIR_COLUMNS)
    better = {(r.arch, r.other) for r in pairs.itertuples() if r.verdict == "better"}
    names = [archs[a] for a in compared]
    table["p_best"] = math.nan
    table["rank_lo"] = math.nan
    table["rank_hi"] = math.nan
    table["in_best_set"] = False
    if compared:
        dfs = pairs["df"].to_numpy(dtype=float) if len(pairs) else np.array([math.inf])
        table.loc[compared, "p_best"] = (_p_best(ms, compared, float(np.min(dfs)), n_draws, seed)
                                         if len(compared) > 1 else 1.0)
        for a in compared:
            above = sum((o, archs[a]) in better for o in names)
            below = sum((archs[a], o) in better for o in names)
            table.loc[a, ["rank_lo", "rank_hi", "in_best_set"]] = [1 + above, len(compared) - below, above == 0]
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    best_set = table.loc[table["in_best_set"], "arch"].tolist()
    verdicts = []
    for row in table.itertuples():
        if 2 * row.collapsed >= n_rep:
            verdicts.append(f"{NOT_LEARNED}: {row.collapsed} of {n_rep} models")
            continue
        if not enough:
            text = (ONE_SEED if one_seed and n_rep >= min_replicates else TOO_FEW).format(r=n_rep)
        elif row.in_best_set:
            text = (ONLY if len(names) == 1 else BEST if len(best_set) == 1 else BEST_SET.format(n=len(best_set)))
            leader = best_set[0]
            if row.arch != leader:
                eq = pairs[(pairs["arch"] == leader) & (pairs["other"] == row.arch) & (pairs["verdict"] == "equivalent")]
                if len(eq):
                    text += f"; equivalent to {leader} (within ±{rope:g})"
        else:
            text = WORSE.format(other=next(o for o in table["arch"] if (o, row.arch) in better))
        if row.collapsed:
            text += f"; {row.collapsed} of {n_rep} models did not learn"
        verdicts.append(text)
    table["verdict"] = verdicts
    table = table[COLUMNS]
    to_resolve = None
    if n_archs > 1 and n_rep >= 2:
        top, runner_up = table.at[0, "arch"], table.at[1, "arch"]
        resolved = ((pairs["arch"] == top) & (pairs["other"] == runner_up) & (pairs["verdict"] == "better")).any()
        if not resolved:
            to_resolve = seeds_to_resolve(ms, archs.index(top), archs.index(runner_up),
                                          n_archs * (n_archs - 1) // 2, alpha)
    table.attrs.update(pairs=pairs, n_images=n_img, n_replicates=n_rep, replicate=unit, rope=rope, alpha=alpha,
                       seeds_to_resolve=to_resolve)
    return table
