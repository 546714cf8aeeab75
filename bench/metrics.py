"""The TGS competition metric, IoU, Dice and the probability-threshold search, in numpy only.

Every score is computed from three integer pixel counts per image (|T|, |P|, |T and P|), so the
threshold comparisons are exact integer arithmetic: an IoU of exactly 0.6 is not a hit at 0.6, as in
the competition (``IoU > t``, strictly). Counting goes row by row with ``np.count_nonzero`` on the
bool pixels (a popcount loop), which is several times faster than summing over axes and never makes
a float copy: 18,000 images score in a few hundredths of a second (see benchmarks/metric_speed.py).
"""
from __future__ import annotations

import numpy as np

THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)
_THRESHOLD_PERCENT = np.arange(50, 100, 5, dtype=np.int64)  # THRESHOLDS * 100, exact integers
_CHUNK = 1024  # images per temporary bool array: keeps the AND / threshold temporaries small


def _check_masks(truth: np.ndarray, other: np.ndarray, other_name: str) -> None:
    """Same (N, H, W) shape; bool truth, so probabilities or 0/255 masks are never scored by accident."""
    if truth.shape != other.shape:
        raise ValueError(f"truth and {other_name} shapes differ: {truth.shape} vs {other.shape}")
    if truth.ndim != 3:
        raise ValueError(f"expected (N, H, W) arrays, got shape {truth.shape}")
    if truth.dtype != np.bool_:
        raise TypeError(f"truth must be a bool mask, got dtype {truth.dtype}")


def _as_masks(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two (N, H, W) bool masks and view them as (N, H*W) rows."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    _check_masks(truth, pred, "prediction")
    if pred.dtype != np.bool_:
        raise TypeError(f"prediction must be a bool mask, got dtype {pred.dtype} (threshold probabilities first)")
    n = truth.shape[0]
    return truth.reshape(n, -1), pred.reshape(n, -1)


def _row_counts(flat: np.ndarray) -> np.ndarray:
    """Number of True pixels per row of a (N, P) bool array."""
    return np.fromiter((np.count_nonzero(row) for row in flat), dtype=np.int64, count=flat.shape[0])


def _intersections(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """|T and P| per row, chunked so the AND temporary stays small."""
    out = np.empty(truth.shape[0], dtype=np.int64)
    for i in range(0, truth.shape[0], _CHUNK):
        out[i:i + _CHUNK] = _row_counts(truth[i:i + _CHUNK] & pred[i:i + _CHUNK])
    return out


def _precision_from_counts(n_truth: np.ndarray, n_pred: np.ndarray, n_inter: np.ndarray) -> np.ndarray:
    """Competition score per image from integer counts (exact, no float comparison)."""
    union = n_truth + n_pred - n_inter
    hits = n_inter[:, None] * 100 > _THRESHOLD_PERCENT[None, :] * union[:, None]
    score = np.count_nonzero(hits, axis=1) / len(_THRESHOLD_PERCENT)
    return np.where(n_truth == 0, (n_pred == 0).astype(np.float64), score)


def tgs_precision(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-image competition score: empty truth scores 1 iff the prediction is empty, else mean_t [IoU > t]."""
    t, p = _as_masks(truth, pred)
    return _precision_from_counts(_row_counts(t), _row_counts(p), _intersections(t, p))


def all_empty_scores(truth: np.ndarray) -> np.ndarray:
    """Per-image TGS score of predicting no salt anywhere: 1 on an empty truth, 0 otherwise. Its mean is
    the all-empty baseline, the floor any model that learned something must clear."""
    truth = np.asarray(truth, dtype=bool)
    return (~truth.reshape(truth.shape[0], -1).any(axis=1)).astype(np.float64)


def tgs_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dataset score: the mean of the per-image competition scores."""
    return float(tgs_precision(truth, pred).mean())


def iou(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-image IoU; both masks empty counts as 1.0 (a perfect prediction of 'no salt')."""
    t, p = _as_masks(truth, pred)
    n_truth, n_pred, n_inter = _row_counts(t), _row_counts(p), _intersections(t, p)
    union = n_truth + n_pred - n_inter
    return np.where(union == 0, 1.0, n_inter / np.maximum(union, 1))


def dice(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-image Dice 2|T and P| / (|T| + |P|); both masks empty counts as 1.0, as for IoU."""
    t, p = _as_masks(truth, pred)
    n_truth, n_pred, n_inter = _row_counts(t), _row_counts(p), _intersections(t, p)
    total = n_truth + n_pred
    return np.where(total == 0, 1.0, 2 * n_inter / np.maximum(total, 1))


def level(threshold: float) -> int:
    """The uint8 level a probability cut compares against: for an integer level ``p``, ``p / 255 > t`` is
    ``p > floor(255 t)``; rounded first so that 255 * 0.6 is 153, not 152.99..."""
    return int(np.floor(round(255 * threshold, 9)))


def binarise(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``probs > threshold`` without a float copy; uint8 probabilities are read as value / 255.

    The one threshold rule of the project: the threshold search, the leaderboard, post-processing,
    the gallery and the submission all draw masks through it, so they agree pixel for pixel."""
    if probs.dtype == np.uint8:
        return probs > level(threshold)
    return probs > probs.dtype.type(threshold)


def best_threshold(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: np.ndarray | None = None,
) -> tuple[float, float]:
    """Probability threshold that maximises the TGS score of ``probs > threshold``, and that score.

    Meant for pooled out-of-fold probabilities only, so the test set never informs the choice.
    ``probs`` is float (any precision) or uint8 (value / 255), shaped like ``truth``. Ties go to the
    lowest threshold. Default grid: 0.05, 0.10, ..., 0.95.
    """
    probs, truth = np.asarray(probs), np.asarray(truth)
    _check_masks(truth, probs, "probabilities")
    if thresholds is None:
        thresholds = np.round(np.linspace(0.05, 0.95, 19), 2)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise ValueError("thresholds must be a non-empty 1-D sequence")
    thresholds = np.unique(thresholds)  # sorted, so np.argmax breaks ties towards the lowest threshold
    if probs.dtype != np.uint8 and not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(f"probabilities must be float or uint8, got dtype {probs.dtype}")
    t = truth.reshape(truth.shape[0], -1)
    flat_probs = probs.reshape(t.shape)
    n_truth = _row_counts(t)
    n_pred = np.empty((thresholds.size, t.shape[0]), dtype=np.int64)
    n_inter = np.empty_like(n_pred)
    for i in range(0, t.shape[0], _CHUNK):
        chunk, truth_chunk = flat_probs[i:i + _CHUNK], t[i:i + _CHUNK]
        if chunk.dtype == np.float16:  # numpy compares float16 element by element in software: widen once
            chunk = chunk.astype(np.float32)
        for j, threshold in enumerate(thresholds):
            pred = binarise(chunk, float(threshold))
            n_pred[j, i:i + _CHUNK] = _row_counts(pred)
            n_inter[j, i:i + _CHUNK] = _row_counts(pred & truth_chunk)
    scores = np.array([_precision_from_counts(n_truth, n_pred[j], n_inter[j]).mean() for j in range(thresholds.size)])
    best = int(np.argmax(scores))
    return float(thresholds[best]), float(scores[best])
