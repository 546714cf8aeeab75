"""Losses by name, weighted sums and staged schedules (e.g. BCE for N epochs, then Lovasz).

Dice is smp's. The binary Lovasz hinge is batched here: smp's ``per_image=True`` loops over the images in
Python, about 1,100 extra kernel launches per step at batch 32 on a GPU; this one sorts all images at once.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError

LOSSES: dict[str, Callable[[], nn.Module]] = {}


def lovasz_hinge_per_image(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images of the binary Lovasz hinge of each image (Berman et al. 2018), batched.

    Same value as smp's ``LovaszLoss(mode="binary", per_image=True)``, images with no positive pixel included
    (their loss is ``relu(1 + max logit)``), and the same gradient. Where errors tie, the value does not depend
    on their order but the (sub)gradient does: the rows are sorted by the same unstable ``torch.sort`` smp calls
    on each image, which on the CPU orders every row as smp's 1-D sort does. ``logits`` and ``target`` have the
    same number of elements per image; the arithmetic is done in at least float32, as smp's cumulative sums are.
    """
    n = logits.shape[0]
    work = torch.promote_types(logits.dtype, torch.float32)
    scores = logits.reshape(n, -1).to(work)
    labels = target.reshape(n, -1).to(work)
    errors = 1.0 - scores * (2.0 * labels - 1.0)
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    gt_sorted = labels.gather(1, perm)
    positives = gt_sorted.sum(dim=1, keepdim=True)
    intersection = positives - gt_sorted.cumsum(dim=1)
    union = positives + (1.0 - gt_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    grad = torch.diff(jaccard, dim=1, prepend=jaccard.new_zeros(n, 1))
    return (F.relu(errors_sorted) * grad).sum(dim=1).mean()


class LovaszHinge(nn.Module):
    """Per-image binary Lovasz hinge on logits, as a module for ``LOSSES``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_hinge_per_image(logits, target)


def _register() -> None:
    from segmentation_models_pytorch.losses import DiceLoss

    LOSSES.update(
        bce=nn.BCEWithLogitsLoss,
        dice=lambda: DiceLoss(mode="binary", from_logits=True),
        lovasz=LovaszHinge,
    )


def names() -> list[str]:
    if not LOSSES:
        _register()
    return sorted(LOSSES)


def check_terms(terms: dict[str, float], where: str) -> None:
    """Refuse what would fail only later in training: unknown names, bad weights, nothing to minimise."""
    if not terms:
        raise BenchError(f"{where}: at least one loss term is needed")
    for name, weight in terms.items():
        if name not in names():
            raise BenchError(f"{where}: unknown loss {name!r} (valid: {', '.join(names())})")
        if isinstance(weight, bool) or not isinstance(weight, Real):
            raise BenchError(f"{where}.{name}: weight must be a number, got {weight!r}")
        if not math.isfinite(weight):
            raise BenchError(f"{where}.{name}: weight must be finite, got {weight}")
        if weight < 0:
            raise BenchError(f"{where}.{name}: weight must be >= 0, got {weight}")
    if not any(weight > 0 for weight in terms.values()):
        raise BenchError(f"{where}: every weight is 0 ({', '.join(terms)}), so there is nothing to minimise")


class WeightedLoss(nn.Module):
    """sum_i w_i * loss_i(logits, target); terms with weight 0 are not evaluated."""

    def __init__(self, terms: dict[str, float]):
        super().__init__()
        check_terms(terms, "loss")
        self.weights = {k: float(w) for k, w in terms.items() if w > 0}
        self.terms = nn.ModuleDict({k: LOSSES[k]() for k in self.weights})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * self.terms[k](logits, target) for k, w in self.weights.items())


class StagedLoss(nn.Module):
    """``first`` before ``switch_epoch``, ``then`` from it on; the trainer calls ``at(epoch)``."""

    def __init__(self, first: dict[str, float], then: dict[str, float] | None = None, switch_epoch: int | None = None):
        super().__init__()
        self.first = WeightedLoss(first)
        self.then = WeightedLoss(then) if then else None
        self.switch_epoch = switch_epoch

    def at(self, epoch: int) -> WeightedLoss:
        if self.then is not None and self.switch_epoch is not None and epoch >= self.switch_epoch:
            return self.then
        return self.first
