"""Decisions and diagnostics from the empty-vs-salt head's out-of-fold probabilities, in numpy and scipy only.

The head (``architectures.create(empty_head=...)``) gives one probability per image that the image has
salt. Three questions are asked of it on pooled OOF data:

- ``choose_head_cut``: does emptying the masks of the images it calls empty raise the TGS score, and at
  which probability cut? The metric gives an empty-truth image 0 for a single stray pixel, so a good
  image-level call can be worth more than pixel-level care; the cut is kept only if it helps.
- ``classifier_metrics``: how good a classifier it is on its own (accuracy, ROC AUC, confusion, ROC curve).
- ``probe_table``: what the classifier alone would score as a leaderboard probe, and what each of its
  errors costs there.

Conventions shared by all three: the positive class is "has salt"; an image is called empty when its
probability is at most the cut (``head_probs <= cut``), salt when above it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from bench.metrics import tgs_precision

CUT_GRID = np.round(np.arange(1, 20) * 0.05, 2)
"""Candidate cuts of ``choose_head_cut``: 0.05, 0.10, ..., 0.95."""
_EPS = 1e-12  # a cut must beat the score without it by more than float noise to be kept


@dataclass(frozen=True)
class HeadCut:
    """The cut chosen on OOF data (``None``: emptying never helped) and the pooled scores that justified it."""

    cut: float | None
    score_before: float  # mean TGS score of the masks as they are
    score_after: float  # after emptying the images with head_prob <= cut (equals score_before when cut is None)
    emptied: int  # images emptied at the cut (0 when cut is None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_probs(head_probs: np.ndarray, truth_empty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) probabilities in [0, 1] and (N,) bool truth, N > 0; bool so 0/1 labels of either meaning are never guessed."""
    probs, empty = np.asarray(head_probs), np.asarray(truth_empty)
    if probs.ndim != 1 or probs.shape != empty.shape or probs.size == 0:
        raise ValueError(f"head_probs and truth_empty must be equal non-empty (N,) arrays, got {probs.shape} and {empty.shape}")
    if empty.dtype != np.bool_:
        raise TypeError(f"truth_empty must be bool (True: the truth mask is empty), got dtype {empty.dtype}")
    probs = probs.astype(np.float64)
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("head_probs must be probabilities in [0, 1] (apply the sigmoid to the head's logits)")
    return probs, empty


def emptied_by_cut(head_probs: np.ndarray, cut: float | None) -> np.ndarray:
    """(N,) bool: the images whose masks a cut empties (``head_probs <= cut``); none for ``cut=None``."""
    probs = np.asarray(head_probs, dtype=np.float64)
    return np.zeros(probs.shape, dtype=bool) if cut is None else probs <= cut


def choose_head_cut(
    head_probs: np.ndarray,
    scores: np.ndarray,
    truth_empty: np.ndarray,
    grid: np.ndarray = CUT_GRID,
) -> HeadCut:
    """The cut on ``grid`` whose emptying maximises the mean TGS score, kept only if it beats the masks as they are.

    ``scores`` are the per-image TGS scores (``bench.metrics.tgs_precision``) of the current masks; an
    emptied image then scores 1 if its truth is empty and 0 otherwise, so no mask is needed. Meant for
    pooled OOF data only, so the test set never informs the cut. Ties go to the lowest cut (fewest images
    emptied). ``score_after >= score_before`` always.
    """
    probs, empty = _check_probs(head_probs, truth_empty)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != probs.shape:
        raise ValueError(f"scores must be (N,) like head_probs, got {scores.shape} vs {probs.shape}")
    if not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError("scores must be per-image TGS scores in [0, 1]")
    cuts = np.unique(np.asarray(grid, dtype=np.float64))  # sorted: np.argmax breaks ties towards the lowest cut
    if cuts.ndim != 1 or cuts.size == 0:
        raise ValueError("grid must be a non-empty 1-D sequence of cuts")
    before = float(scores.mean())
    emptied = probs[None, :] <= cuts[:, None]
    means = np.where(emptied, empty[None, :].astype(np.float64), scores[None, :]).mean(axis=1)
    best = int(np.argmax(means))
    if means[best] > before + _EPS:
        return HeadCut(float(cuts[best]), before, float(means[best]), int(np.count_nonzero(emptied[best])))
    return HeadCut(None, before, before, 0)


def classifier_metrics(head_probs: np.ndarray, truth_empty: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """The head as a "has salt" classifier: accuracy, confusion counts at ``threshold``, ROC AUC and ROC curve.

    Salt is called when ``head_prob > threshold``. ``roc_auc`` is the Mann-Whitney probability that a salt
    image outranks an empty one (ties count half), NaN when either class is absent. The ROC curve has one
    point per distinct probability, from (0, 0) to (1, 1); at ``thresholds[i]`` salt is called for
    ``head_prob >= thresholds[i]`` (the first threshold, infinity, calls nothing), the usual ROC convention.
    """
    probs, empty = _check_probs(head_probs, truth_empty)
    salt = ~empty
    called = probs > threshold
    tp, fp = int(np.count_nonzero(called & salt)), int(np.count_nonzero(called & empty))
    fn, tn = int(np.count_nonzero(~called & salt)), int(np.count_nonzero(~called & empty))
    n_salt, n_empty = tp + fn, fp + tn
    if n_salt and n_empty:
        auc = float(mannwhitneyu(probs[salt], probs[empty], alternative="two-sided").statistic) / (n_salt * n_empty)
    else:
        auc = float("nan")

    order = np.argsort(-probs, kind="stable")
    ranked, ranked_salt = probs[order], salt[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # end of each run of equal values
    tps = np.cumsum(ranked_salt)[last_of_value]
    fps = (last_of_value + 1) - tps
    return {
        "n": int(probs.size),
        "n_salt": n_salt,
        "n_empty": n_empty,
        "threshold": float(threshold),
        "accuracy": (tp + tn) / probs.size,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "roc_auc": auc,
        "roc": {
            "fpr": np.r_[0.0, fps / n_empty if n_empty else np.full(fps.size, np.nan)].tolist(),
            "tpr": np.r_[0.0, tps / n_salt if n_salt else np.full(tps.size, np.nan)].tolist(),
            "thresholds": np.r_[np.inf, ranked[last_of_value]].tolist(),
        },
    }


def probe_table(
    head_probs: np.ndarray,
    truth_empty: np.ndarray,
    cut: float = 0.5,
    truth_masks: np.ndarray | None = None,
) -> dict[str, Any]:
    """The leaderboard probe a user can run with the classifier alone, and what each of its errors costs.

    Two submissions are scored:

    - ``all_empty_score``: every mask empty; scores the fraction of empty truths.
    - ``probe_score``: every mask empty except those of the images the classifier calls salt
      (``head_prob > cut``), which get the placeholder: the full image mask. The full mask scores 0 on
      an empty truth, and on a salt truth T the TGS score of IoU = |T| / (H W), the truth's coverage,
      which is non-zero only when the salt covers more than half the image. That needs ``truth_masks``
      ((N, H, W) bool); without them every placeholder is counted as 0, which is exact unless some salt
      image is more than half salt (``placeholder_scored`` says which was done).

    Costs, in points of the mean score, against a perfect classifier (``oracle_score``): each false
    "salt" on an empty image costs ``1 / N`` (it would have scored 1 left empty), each false "empty" on
    a salt image costs its placeholder score ``/ N``. So ``probe_score = oracle_score - false_salt_cost
    - false_empty_cost``.
    """
    probs, empty = _check_probs(head_probs, truth_empty)
    n = probs.size
    if truth_masks is None:
        placeholder = np.zeros(n)
    else:
        masks = np.asarray(truth_masks)
        if masks.ndim != 3 or masks.shape[0] != n or masks.dtype != np.bool_:
            raise ValueError(f"truth_masks must be (N, H, W) bool with N = {n}, got {masks.dtype} {masks.shape}")
        if not np.array_equal(~masks.reshape(n, -1).any(axis=1), empty):
            raise ValueError("truth_masks disagree with truth_empty on which images are empty")
        placeholder = tgs_precision(masks, np.ones_like(masks))
    called_salt = probs > cut
    false_salt = called_salt & empty
    false_empty = ~called_salt & ~empty
    oracle = float((np.count_nonzero(empty) + placeholder[~empty].sum()) / n)
    probe = float((np.count_nonzero(~called_salt & empty) + placeholder[called_salt & ~empty].sum()) / n)
    return {
        "n": int(n),
        "cut": float(cut),
        "placeholder": "full mask",
        "placeholder_scored": truth_masks is not None,
        "all_empty_score": float(np.count_nonzero(empty) / n),
        "probe_score": probe,
        "oracle_score": oracle,
        "false_salt": int(np.count_nonzero(false_salt)),
        "false_salt_cost": float(np.count_nonzero(false_salt) / n),
        "cost_per_false_salt": 1.0 / n,
        "false_empty": int(np.count_nonzero(false_empty)),
        "false_empty_cost": float(placeholder[false_empty].sum() / n),
    }


#: the image-level empty cuts weighed against each other in classifier.csv: (column, the peak-probability cut is a
#: candidate, the head's cut is a candidate); threshold and minimum area are decided as always
CUTS = (("score_no_cut", False, False), ("score_peak_cut", True, False), ("score_head_cut", False, True),
        ("score_both_cuts", True, True))

#: the columns of ``probe_table`` that classifier.csv keeps
PROBE_KEYS = ("all_empty_score", "probe_score", "oracle_score", "false_salt", "false_salt_cost", "false_empty",
              "false_empty_cost")


def table_rows(arch: str, seed: int, splits: dict[str, tuple[np.ndarray, np.ndarray]],
               cut_scores: dict[str, dict[str, float]], head_cut: float | None, fold_cuts: str) -> list[dict[str, Any]]:
    """classifier.csv's rows of one (arch, seed), one per split (name -> (head probabilities, truth masks)): the
    head as a classifier (at 0.5), as a leaderboard probe (``probe_table``) and, from ``cut_scores`` (split -> one
    score per ``CUTS`` column), as an image-level empty cut against the peak-probability cut and no cut.
    ``head_cut`` is the pooled OOF's cut (the holdout's and the test set's), ``fold_cuts`` each fold's own."""
    rows = []
    for name, (head, truth) in splits.items():
        empty = ~truth.any(axis=(1, 2))
        judged = classifier_metrics(head, empty)
        probe = probe_table(head, empty, truth_masks=truth)
        rows.append({
            "arch": arch, "seed": seed, "split": name, "n": judged["n"], "n_salt": judged["n_salt"],
            "n_empty": judged["n_empty"], "accuracy": judged["accuracy"], "roc_auc": judged["roc_auc"],
            "tp": judged["tp"], "fp": judged["fp"], "fn": judged["fn"], "tn": judged["tn"],
            **{k: probe[k] for k in PROBE_KEYS}, **cut_scores[name],
            "head_cut": np.nan if head_cut is None else head_cut,
            "fold_head_cuts": fold_cuts if name == "oof" else "",
        })
    return rows
