"""The empty-vs-salt head: the same head on every architecture, gradients, "off is unchanged", and the OOF decisions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from segmentation_models_pytorch.base import ClassificationHead
from torch import nn

from architectures import EMPTY_HEAD_DEFAULTS, create, describe, names
from bench import classifier

ENCODER = "tu-test_resnet"


def _build(name: str, empty_head: dict | None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create(name, encoder=ENCODER, encoder_weights=None, in_channels=1, empty_head=empty_head)


def _batch() -> torch.Tensor:
    return torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module", params=names())
def pair(request) -> tuple[str, nn.Module, nn.Module]:
    """(name, model without the head, model with it), both from seed 0."""
    return request.param, _build(request.param, None), _build(request.param, {"dropout": 0.3})


def _head_layout(head: nn.Module) -> list[str]:
    return [type(m).__name__ for m in head]


def test_head_is_the_same_on_every_architecture() -> None:
    """Same layout, the same parameter count (C + 1 for C deepest encoder channels) and output shape for all six."""
    counts, layouts = {}, {}
    for name in names():
        model = _build(name, {}).eval()
        head = model.classification_head
        assert isinstance(head, ClassificationHead)
        assert isinstance(head[0], nn.AdaptiveAvgPool2d) and head[0].output_size == 1
        assert head[2].p == EMPTY_HEAD_DEFAULTS["dropout"]
        assert (head[3].in_features, head[3].out_features) == (model.encoder.out_channels[-1], 1)
        assert isinstance(head[4].activation, nn.Identity)
        with torch.no_grad():
            masks, empty = model(_batch())
        assert masks.shape == (2, 1, 64, 64) and empty.shape == (2, 1)
        counts[name] = sum(p.numel() for p in head.parameters())
        layouts[name] = _head_layout(head)
    assert len(set(counts.values())) == 1, counts
    assert len({tuple(v) for v in layouts.values()}) == 1, layouts
    assert counts["unet"] == _build("unet", None).encoder.out_channels[-1] + 1


def test_dropout_option_reaches_the_head() -> None:
    assert isinstance(_build("linknet", {"dropout": 0.0}).classification_head[2], nn.Identity)
    assert _build("refinenet", {"dropout": 0.45}).classification_head[2].p == 0.45


def test_off_is_todays_model_and_on_adds_only_the_head(pair) -> None:
    """Without the head: no head, a tensor out. With it (same seed): every other weight and the mask logits are bit-identical."""
    _, off, on = pair
    assert off.classification_head is None
    off_state, on_state = off.state_dict(), on.state_dict()
    extra = sorted(set(on_state) - set(off_state))
    assert extra == ["classification_head.3.bias", "classification_head.3.weight"]
    assert all(torch.equal(off_state[k], on_state[k]) for k in off_state)
    off.eval()
    on.eval()
    with torch.no_grad():
        plain = off(_batch())
        masks, _ = on(_batch())
    assert isinstance(plain, torch.Tensor)
    assert torch.equal(plain, masks)


def test_head_loss_trains_the_encoder_and_not_the_decoder(pair) -> None:
    _, _, model = pair
    model.train()
    model.zero_grad(set_to_none=True)
    _, empty = model(_batch())
    F.binary_cross_entropy_with_logits(empty, torch.tensor([[1.0], [0.0]])).backward()
    encoder = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in encoder)
    assert sum(g.abs().sum() for g in encoder) > 0
    assert next(model.encoder.parameters()).grad.abs().sum() > 0  # the stem, farthest from the head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.classification_head.parameters())
    rest = [n for n, p in model.named_parameters()
            if not n.startswith(("encoder.", "classification_head.")) and p.grad is not None]
    assert rest == []


def test_describe_counts_the_head_as_live(pair) -> None:
    _, off, on = pair
    without, with_head = describe(off, 64), describe(on, 64)
    assert with_head["dead_params"] == 0
    assert with_head["params"] - without["params"] == on.encoder.out_channels[-1] + 1


def test_empty_head_options_are_checked() -> None:
    with pytest.raises(TypeError, match="weight"):
        create("unet", encoder=ENCODER, empty_head={"dropout": 0.2, "weight": 0.5})
    with pytest.raises(ValueError, match="dropout"):
        create("unet", encoder=ENCODER, empty_head={"dropout": 1.0})


# --- decisions on OOF data -------------------------------------------------------------------------------


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
