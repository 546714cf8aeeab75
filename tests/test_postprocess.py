"""Post-processing decided on OOF: the threshold, min_area and the peak-probability cut never lower the score
they were chosen on, and applying the decision reproduces it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import postprocess
from bench.metrics import best_threshold, tgs_score


def _blobs(rng: np.random.Generator, n: int, size: int = 101) -> np.ndarray:
    """Rectangles of random size (some tiny, some absent) as bool masks."""
    masks = np.zeros((n, size, size), bool)
    for m in masks:
        if rng.random() < 0.4:
            continue
        h, w = rng.integers(1, size, 2) if rng.random() < 0.7 else rng.integers(1, 5, 2)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        m[top:top + h, left:left + w] = True
    return masks


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_post_processing_never_lowers_the_pooled_score_and_reproduces_it(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _blobs(rng, 40)
    noise = rng.normal(0, rng.uniform(0.05, 0.5), truth.shape)
    spurious = _blobs(rng, 40) & (rng.random((40, 1, 1)) < 0.3)
    probs = np.clip(0.25 + 0.5 * (truth | spurious) + noise, 0, 1)
    levels = np.round(probs * 255).astype(np.uint8)
    d = postprocess.decide(levels, truth)
    threshold, best = best_threshold(levels, truth)
    assert (d.threshold, d.score_raw) == (threshold, pytest.approx(best, abs=1e-12))
    assert d.score_raw <= d.score_min_area <= d.score_post
    assert tgs_score(truth, postprocess.apply(levels, d)) == pytest.approx(d.score_post, abs=1e-12)
    if d.min_area == 0:
        assert d.score_min_area == d.score_raw
    if d.empty_max_prob is None:
        assert d.score_post == d.score_min_area


def test_min_area_is_kept_only_when_it_helps() -> None:
    truth = np.zeros((20, 101, 101), bool)
    truth[10:, 20:80, 20:80] = True
    levels = np.where(truth, 240, 10).astype(np.uint8)
    levels[:10, 5:7, 5:9] = 240  # 8-pixel confident blobs on the empty-truth images
    d = postprocess.decide(levels, truth)
    assert d.score_raw == pytest.approx(0.5) and d.score_post == pytest.approx(1.0)
    assert 8 < d.min_area <= 3600 and d.empty_max_prob is None

    small = np.zeros_like(truth)
    small[10:, 5:7, 5:9] = True  # the same 8-pixel blobs are real salt here: removing them would hurt
    d = postprocess.decide(np.where(small, 240, 10).astype(np.uint8), small)
    assert (d.min_area, d.empty_max_prob, d.score_post) == (0, None, d.score_raw)


def test_peak_probability_cut_empties_unconfident_images() -> None:
    truth = np.zeros((20, 101, 101), bool)
    truth[10:, 20:80, 20:80] = True
    levels = np.where(truth, 250, 10).astype(np.uint8)
    levels[:10, 20:80, 20:80] = 160  # large, unconfident false salt: too big for min_area
    d = postprocess.decide(levels, truth, threshold=0.5)
    assert d.min_area == 0 and d.empty_max_prob is not None and 160 / 255 <= d.empty_max_prob < 250 / 255
    assert d.score_raw == pytest.approx(0.5) and d.score_post == pytest.approx(1.0)
