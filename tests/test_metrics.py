"""The competition metric against hand-computed cases, including IoU exactly at a threshold."""
from __future__ import annotations

import numpy as np
import pytest

from bench.metrics import THRESHOLDS, best_threshold, dice, iou, tgs_precision, tgs_score


def _pair(n_truth: int, n_inter: int, n_extra: int, size: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """One image: truth has ``n_truth`` pixels, the prediction ``n_inter`` of them plus ``n_extra`` others."""
    truth = np.zeros((1, size, size), dtype=bool)
    pred = np.zeros_like(truth)
    flat_t, flat_p = truth.reshape(-1), pred.reshape(-1)
    flat_t[:n_truth] = True
    flat_p[:n_inter] = True
    flat_p[n_truth:n_truth + n_extra] = True
    return truth, pred


def test_thresholds_are_exactly_the_competition_ones():
    np.testing.assert_array_equal(THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


def test_empty_cases():
    both_empty = _pair(0, 0, 0)
    empty_truth_salt_predicted = _pair(0, 0, 1)
    salt_missed = _pair(5, 0, 0)
    truth = np.concatenate([both_empty[0], empty_truth_salt_predicted[0], salt_missed[0]])
    pred = np.concatenate([both_empty[1], empty_truth_salt_predicted[1], salt_missed[1]])
    np.testing.assert_array_equal(tgs_precision(truth, pred), [1.0, 0.0, 0.0])
    assert tgs_score(truth, pred) == pytest.approx(1 / 3)


def test_full_overlap_scores_one():
    truth, pred = _pair(300, 300, 0)
    assert tgs_precision(truth, pred).tolist() == [1.0]


@pytest.mark.parametrize(
    ("n_truth", "n_inter", "n_extra", "expected"),
    [
        (5, 3, 0, 0.2),    # IoU 3/5 = 0.6 exactly: hits at 0.50, 0.55 only, not at 0.60
        (4, 3, 0, 0.5),    # IoU 3/4 = 0.75 exactly: hits 0.50 .. 0.70, not at 0.75
        (2, 1, 0, 0.0),    # IoU 0.5 exactly: not even the first threshold
        (10, 9, 0, 0.8),   # IoU 0.9: 0.50 .. 0.85
        (8, 6, 2, 0.2),    # IoU 6/10 = 0.6 with a false positive part
        (100, 96, 0, 1.0),  # IoU 0.96 > 0.95
        (100, 95, 0, 0.9),  # IoU 0.95 exactly: not at 0.95
    ],
)
def test_hand_computed_partial_overlaps(n_truth, n_inter, n_extra, expected):
    truth, pred = _pair(n_truth, n_inter, n_extra)
    assert tgs_precision(truth, pred)[0] == pytest.approx(expected)


@pytest.mark.parametrize("percent", range(50, 100, 5))
def test_iou_exactly_at_each_threshold_is_not_a_hit(percent):
    truth, pred = _pair(20, percent // 5, 0)  # IoU = percent / 100 exactly
    assert tgs_precision(truth, pred)[0] == pytest.approx((percent - 50) / 5 / 10)


def test_iou_and_dice_per_image():
    cases = [_pair(0, 0, 0), _pair(4, 2, 2), _pair(4, 4, 0), _pair(0, 0, 3)]
    truth = np.concatenate([c[0] for c in cases])
    pred = np.concatenate([c[1] for c in cases])
    np.testing.assert_allclose(iou(truth, pred), [1.0, 2 / 6, 1.0, 0.0])
    np.testing.assert_allclose(dice(truth, pred), [1.0, 4 / 8, 1.0, 0.0])


def test_inputs_are_checked():
    truth, pred = _pair(4, 2, 0)
    with pytest.raises(ValueError, match="shapes differ"):
        tgs_precision(truth, pred[:, :50])
    with pytest.raises(TypeError, match="threshold probabilities first"):
        tgs_precision(truth, pred.astype(np.float32))
    with pytest.raises(TypeError, match="truth must be a bool mask"):
        iou(truth.astype(np.uint8), pred)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        dice(truth[0], pred[0])


def _threshold_case() -> tuple[np.ndarray, np.ndarray]:
    """Three images whose only perfect threshold on the default grid is 0.55 (no value sits on a grid point).

    0: salt square at p=0.9 on background 0.2 (any t in [0.2, 0.9) is perfect);
    1: no salt, a speckle at p=0.53 (needs t >= 0.53);
    2: salt whose left half is p=0.7 and right half p=0.58 (t >= 0.58 gives IoU 0.5, a score of 0).
    """
    probs = np.full((3, 101, 101), 0.2)
    truth = np.zeros((3, 101, 101), dtype=bool)
    truth[0, 20:60, 20:60] = True
    probs[0, 20:60, 20:60] = 0.9
    probs[1, 50, 50:53] = 0.53
    truth[2, 30:70, 30:70] = True
    probs[2, 30:70, 30:50] = 0.7
    probs[2, 30:70, 50:70] = 0.58
    return probs, truth


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.uint8])
def test_best_threshold_finds_the_known_answer(dtype):
    probs, truth = _threshold_case()
    probs = np.round(probs * 255).astype(np.uint8) if dtype == np.uint8 else probs.astype(dtype)
    threshold, score = best_threshold(probs, truth)
    assert threshold == pytest.approx(0.55)
    assert score == pytest.approx(1.0)
    assert best_threshold(probs, truth, thresholds=[0.5, 0.6])[1] == pytest.approx(2 / 3)


def test_best_threshold_uint8_boundary_is_strict():
    truth = np.zeros((1, 101, 101), dtype=bool)
    truth[0, :10, :10] = True
    probs = np.where(truth, np.uint8(153), np.uint8(0))  # 153 / 255 = 0.6 exactly
    assert best_threshold(probs, truth, thresholds=[0.6]) == (0.6, 0.0)
    assert best_threshold(probs, truth, thresholds=[0.59]) == (0.59, 1.0)


def test_best_threshold_ties_go_to_the_lowest_threshold():
    truth = np.zeros((1, 101, 101), dtype=bool)
    truth[0, :10, :10] = True
    probs = np.where(truth, 0.8, 0.1)
    assert best_threshold(probs, truth, thresholds=[0.7, 0.3, 0.5]) == (0.3, 1.0)
    assert best_threshold(probs, truth)[0] == pytest.approx(0.1)


def test_best_threshold_rejects_integer_probabilities():
    truth = np.zeros((1, 101, 101), dtype=bool)
    with pytest.raises(TypeError, match="float or uint8"):
        best_threshold(np.zeros((1, 101, 101), dtype=np.int32), truth)
