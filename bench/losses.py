"""Losses by name, weighted sums and staged schedules (e.g. BCE for N epochs, then Lovasz).

The Lovasz and Dice terms are smp's; only the combination logic lives here.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.errors import BenchError

LOSSES: dict[str, Callable[[], nn.Module]] = {}


def _register() -> None:
    from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss

    LOSSES.update(
        bce=nn.BCEWithLogitsLoss,
        dice=lambda: DiceLoss(mode="binary", from_logits=True),
        lovasz=lambda: LovaszLoss(mode="binary", per_image=True),
    )


def names() -> list[str]:
    if not LOSSES:
        _register()
    return sorted(LOSSES)


def check_terms(terms: dict[str, float], where: str) -> None:
    if not terms:
        raise BenchError(f"{where}: at least one loss term is needed")
    for name, weight in terms.items():
        if name not in names():
            raise BenchError(f"{where}: unknown loss {name!r} (valid: {', '.join(names())})")
        if weight < 0:
            raise BenchError(f"{where}.{name}: weight must be >= 0, got {weight}")


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
