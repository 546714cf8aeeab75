"""The empty-vs-salt head: the same head on every architecture, gradients, "off is unchanged", and the OOF decisions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import ClassificationHead
from torch import nn

from architectures import EMPTY_HEAD_DEFAULTS, create, describe, names

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
