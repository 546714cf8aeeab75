"""Optimisers and learning-rate schedules by name, as the losses are (``bench.losses.LOSSES``): a config names
one, ``bench.config.validate`` refuses any other name with these listed. Nothing here imports ``bench.config``,
which validates against these registries."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

#: ``protocol.optimizer.name`` -> builder(optimizer section, model); fused AdamW on CUDA (one kernel for all
#: parameters; recorded in the cell identity through the device type)
OPTIMIZERS: dict[str, Callable[[Any, torch.nn.Module], torch.optim.Optimizer]] = {
    "adamw": lambda o, model: torch.optim.AdamW(
        model.parameters(), lr=o.lr, weight_decay=o.weight_decay,
        fused=next(model.parameters()).device.type == "cuda" or None),
    "sgd": lambda o, model: torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True),
}


def _cosine(s: Any, opt: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
    """Linear warm-up over ``warmup_epochs``, then a cosine from lr down to ``min_lr_ratio * lr``, stepped per step."""
    warmup = s.warmup_epochs * steps_per_epoch
    total = max(epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


#: ``protocol.scheduler.name`` -> builder(scheduler section, optimiser, steps per epoch, epochs). ``plateau`` is
#: stepped on each validation score (``stepped_per_epoch``), the others after every optimiser step.
SCHEDULERS: dict[str, Callable[[Any, torch.optim.Optimizer, int, int], Any]] = {
    "cosine": _cosine,
    "plateau": lambda s, opt, steps_per_epoch, epochs: torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=s.factor, patience=s.patience),
    "none": lambda s, opt, steps_per_epoch, epochs: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0),
}


def stepped_per_epoch(scheduler: Any) -> bool:
    """Whether ``scheduler`` follows the validation score (once per validated epoch) rather than the steps."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
