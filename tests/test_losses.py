"""The batched Lovasz hinge against smp's per-image loop, and the refusal of loss weights that cannot train."""
from __future__ import annotations

import pytest
import torch
from segmentation_models_pytorch.losses import LovaszLoss

from bench.errors import BenchError
from bench.host_sync import count_host_syncs
from bench.losses import LOSSES, LovaszHinge, StagedLoss, WeightedLoss, check_terms, lovasz_hinge_per_image, names

SMP_LOVASZ = LovaszLoss(mode="binary", per_image=True)


def _masks(n: int, h: int, w: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Partial masks, with an empty mask first and a full one second (where the batch is big enough)."""
    y = (torch.rand(n, 1, h, w, generator=gen) > 0.6).to(dtype)
    y[0] = 0
    if n > 1:
        y[1] = 1
    return y


def _value_and_grad(loss, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = logits.detach().clone().requires_grad_(True)
    value = loss(leaf, target)
    value.backward()
    return value.detach(), leaf.grad


@pytest.mark.parametrize("shape", [(8, 1, 101, 101), (6, 1, 1, 1), (5, 1, 7, 3), (1, 1, 1, 1)])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_lovasz_matches_smp_per_image_in_float32(shape: tuple[int, ...], ties: bool) -> None:
    gen = torch.Generator().manual_seed(sum(shape) + ties)
    logits = 3 * torch.randn(*shape, generator=gen)
    if ties:
        logits = logits.round()
    target = _masks(shape[0], shape[2], shape[3], gen, torch.float32)
    ref_value, ref_grad = _value_and_grad(SMP_LOVASZ, logits, target)
    value, grad = _value_and_grad(lovasz_hinge_per_image, logits, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ref_value, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5)
    if shape[0] > 1:  # the full mask has a gradient whatever the logits
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(8, 1, 101, 101), (5, 1, 7, 3), (3, 1, 1, 1)])
def test_lovasz_matches_smp_in_float64(shape: tuple[int, ...]) -> None:
    """smp's per-image hinge raises on float64 (its Jaccard gradient is float32), so it is run on float32 copies.

    The logits lie on a grid of 1/64 that both precisions hold exactly, with many ties, so both sort alike.
    """
    gen = torch.Generator().manual_seed(len(shape) + shape[2])
    logits = (torch.randn(*shape, generator=gen, dtype=torch.float64) * 64).round() / 64
    target = _masks(shape[0], shape[2], shape[3], gen, torch.float64)
    ref_value, ref_grad = _value_and_grad(SMP_LOVASZ, logits.float(), target.float())
    value, grad = _value_and_grad(lovasz_hinge_per_image, logits, target)
    assert value.dtype == grad.dtype == torch.float64
    torch.testing.assert_close(value, ref_value.double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad.double(), rtol=0, atol=1e-5)


def test_lovasz_gradient_agrees_with_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = _masks(4, 5, 3, gen, torch.float64)
    assert torch.autograd.gradcheck(lambda z: lovasz_hinge_per_image(z, target), (logits,), eps=1e-7)


def test_lovasz_of_an_empty_mask_is_the_hinge_of_the_highest_logit() -> None:
    """With no positive pixel the Jaccard loss is 1 as soon as one pixel is predicted: smp's value, and ours."""
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 1, 9, 9, generator=gen) - torch.tensor([0.0, 2.0, 6.0]).view(3, 1, 1, 1)
    target = torch.zeros_like(logits)
    expected = torch.relu(1 + logits.flatten(1).amax(dim=1)).mean()
    torch.testing.assert_close(lovasz_hinge_per_image(logits, target), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(SMP_LOVASZ(logits, target), expected, rtol=0, atol=1e-6)


def test_lovasz_by_name_is_the_batched_one() -> None:
    names()
    assert isinstance(LOSSES["lovasz"](), LovaszHinge)


@pytest.mark.parametrize(("terms", "message"), [
    ({"bce": 0}, "loss.first: every weight is 0 (bce), so there is nothing to minimise"),
    ({"bce": 0.0, "lovasz": 0}, "loss.first: every weight is 0 (bce, lovasz), so there is nothing to minimise"),
    ({"bce": float("nan")}, "loss.first.bce: weight must be finite, got nan"),
    ({"bce": 1.0, "dice": float("inf")}, "loss.first.dice: weight must be finite, got inf"),
    ({"dice": -float("inf")}, "loss.first.dice: weight must be finite, got -inf"),
    ({"bce": "1"}, "loss.first.bce: weight must be a number, got '1'"),
    ({"bce": -1}, "loss.first.bce: weight must be >= 0, got -1"),
])
def test_weights_that_cannot_train_are_refused_with_the_key(terms: dict, message: str) -> None:
    with pytest.raises(BenchError) as err:
        check_terms(terms, "cfg.yaml: protocol.loss.first")
    assert str(err.value) == f"cfg.yaml: protocol.{message}"
    with pytest.raises(BenchError):
        WeightedLoss(terms)


def test_a_zero_weight_beside_a_positive_one_is_still_accepted_and_skipped() -> None:
    check_terms({"bce": 0, "dice": 1}, "loss")
    staged = StagedLoss({"bce": 1.0, "lovasz": 0}, {"lovasz": 1}, switch_epoch=2)
    assert list(staged.at(0).terms) == ["bce"]
    assert list(staged.at(2).terms) == ["lovasz"]


@pytest.mark.parametrize("loss", [
    lambda: WeightedLoss({"bce": 1.0}),
    lambda: WeightedLoss({"dice": 1.0}),
    lambda: WeightedLoss({"lovasz": 1.0}),
    lambda: WeightedLoss({"bce": 0.5, "dice": 0.25, "lovasz": 1.0}),
    lambda: StagedLoss({"bce": 1.0}, {"bce": 0.2, "lovasz": 1.0}, switch_epoch=1).at(0),
    lambda: StagedLoss({"bce": 1.0}, {"bce": 0.2, "lovasz": 1.0}, switch_epoch=1).at(1),
], ids=["bce", "dice", "lovasz", "weighted", "staged-first", "staged-then"])
def test_loss_forward_and_backward_make_no_host_sync(loss) -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 1, 101, 101, generator=gen, requires_grad=True)
    target = _masks(4, 101, 101, gen, torch.float32)
    module = loss()
    with count_host_syncs() as syncs:
        module(logits, target).backward()
    assert syncs.count == 0, syncs.calls
    assert logits.grad.abs().sum() > 0
