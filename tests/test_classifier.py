"""The empty-vs-salt head's OOF decisions: the head cut, the classifier metrics and ROC, the probe table."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import classifier


def test_head_cut_picks_the_best_cut_and_breaks_ties_low() -> None:
    """Cuts 0.20 to 0.30 empty the two empty-truth images (stray salt, score 0) and nothing else, 0.20 because
    a probability equal to the cut is emptied; 0.35 also empties a salt image."""
    probs = np.array([0.12, 0.2, 0.33, 0.8, 0.9])
    scores = np.array([0.0, 0.0, 0.7, 0.9, 1.0])
    empty = np.array([True, True, False, False, False])
    chosen = classifier.choose_head_cut(probs, scores, empty)
    assert chosen.cut == 0.2
    assert chosen.emptied == 2
    assert chosen.score_before == pytest.approx(2.6 / 5)
    assert chosen.score_after == pytest.approx(4.6 / 5)
    assert classifier.emptied_by_cut(probs, chosen.cut).tolist() == [True, True, False, False, False]


def test_head_cut_is_dropped_when_emptying_never_helps() -> None:
    """Every truth has salt and every mask scores something: emptying anything only loses."""
    chosen = classifier.choose_head_cut(np.array([0.01, 0.5, 0.99]), np.array([0.1, 0.5, 1.0]), np.zeros(3, dtype=bool))
    assert chosen == classifier.HeadCut(None, pytest.approx(1.6 / 3), pytest.approx(1.6 / 3), 0)
    assert not classifier.emptied_by_cut(np.array([0.01, 0.5]), None).any()


@settings(max_examples=200, deadline=None)
@given(st.lists(
    st.tuples(st.floats(0, 1) | st.sampled_from(classifier.CUT_GRID.tolist()), st.integers(0, 10), st.booleans()),
    min_size=1, max_size=40,
))
def test_head_cut_never_lowers_the_score_it_was_chosen_on(rows) -> None:
    """Rows are (head prob, score in tenths, empty truth); an empty truth's score is 0 or 1, as the metric gives."""
    probs = np.array([r[0] for r in rows])
    empty = np.array([r[2] for r in rows])
    scores = np.where(empty, np.array([r[1] for r in rows]) >= 5, np.array([r[1] for r in rows]) / 10).astype(float)
    chosen = classifier.choose_head_cut(probs, scores, empty)
    assert chosen.score_before == pytest.approx(scores.mean())
    assert chosen.score_after >= chosen.score_before
    by_cut = [np.where(probs <= c, empty, scores).mean() for c in classifier.CUT_GRID]
    if chosen.cut is None:
        assert chosen.score_after == chosen.score_before and max(by_cut) <= chosen.score_before + 1e-9
    else:
        emptied = classifier.emptied_by_cut(probs, chosen.cut)
        assert chosen.emptied == emptied.sum()
        assert chosen.score_after == pytest.approx(np.where(emptied, empty, scores).mean())
        assert chosen.score_after == pytest.approx(max(by_cut)) and chosen.score_after > chosen.score_before


def test_classifier_metrics_on_a_known_case() -> None:
    probs = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.1])
    empty = np.array([False, False, False, True, True, True])
    m = classifier.classifier_metrics(probs, empty)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["roc_auc"] == pytest.approx(7 / 9)  # salt-over-empty pairs: 3 + 2 + 2 of 9
    assert m["roc"]["fpr"] == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert m["roc"]["tpr"] == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])


def test_roc_auc_matches_pair_counting_and_the_curve_with_ties() -> None:
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 8, 60) / 7  # many ties
    empty = rng.random(60) < 0.4
    m = classifier.classifier_metrics(probs, empty)
    salt_p, empty_p = probs[~empty][:, None], probs[empty][None, :]
    pairs = ((salt_p > empty_p) + 0.5 * (salt_p == empty_p)).mean()
    assert m["roc_auc"] == pytest.approx(pairs)
    assert np.trapezoid(m["roc"]["tpr"], m["roc"]["fpr"]) == pytest.approx(pairs)
    assert len(m["roc"]["fpr"]) == len(np.unique(probs)) + 1
    assert np.isnan(classifier.classifier_metrics(probs, np.zeros(60, dtype=bool))["roc_auc"])


def test_probe_table_on_a_known_case() -> None:
    """Two empty truths (one called empty, one falsely salt) and two salt truths: 70% salt, called salt (full mask
    IoU 0.7: hits at 0.50..0.65 only, 0.4), and 96% salt, falsely called empty (full mask would have scored 1)."""
    masks = np.zeros((4, 10, 10), dtype=bool)
    masks[2].flat[:70] = True
    masks[3].flat[:96] = True
    empty = np.array([True, True, False, False])
    probs = np.array([0.1, 0.9, 0.8, 0.2])
    table = classifier.probe_table(probs, empty, truth_masks=masks)
    assert table["all_empty_score"] == 0.5
    assert table["probe_score"] == pytest.approx((1 + 0.4) / 4)
    assert table["oracle_score"] == pytest.approx((2 + 0.4 + 1.0) / 4)
    assert (table["false_salt"], table["false_empty"]) == (1, 1)
    assert table["false_salt_cost"] == table["cost_per_false_salt"] == 0.25
    assert table["false_empty_cost"] == pytest.approx(0.25)
    assert table["probe_score"] == pytest.approx(table["oracle_score"] - table["false_salt_cost"] - table["false_empty_cost"])

    blind = classifier.probe_table(probs, empty)
    assert not blind["placeholder_scored"]
    assert blind["probe_score"] == 0.25 and blind["oracle_score"] == 0.5 and blind["false_empty_cost"] == 0
    with pytest.raises(ValueError, match="disagree"):
        classifier.probe_table(probs, ~empty, truth_masks=masks)


def test_inputs_are_checked() -> None:
    with pytest.raises(TypeError, match="bool"):
        classifier.classifier_metrics(np.array([0.2, 0.8]), np.array([0, 1]))
    with pytest.raises(ValueError, match="sigmoid"):
        classifier.choose_head_cut(np.array([-1.0]), np.array([0.5]), np.array([True]))
