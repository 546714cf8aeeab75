"""What a model costs, and the equal-compute budget that follows from it.

FLOPs are *counted* (``torch.utils.flop_counter``: convolutions and matrix products, by shape), so they are the
same on every machine and can decide a protocol; latency is *measured*, a fact about the device it ran on only.
With ``protocol.budget`` each architecture trains for the epochs its counted cost allows (``resolve``): the
schedule keeps its shape, its warm-up, loss switch and validation points scaled as fractions of it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import architectures
from bench.config import ArchPlan, BudgetConfig, Config, InputConfig
from bench.errors import BenchError
from bench.inference import autocast, split_outputs, to_network

COUNT_BATCH = 2  # BatchNorm in training mode needs more than one value per channel (PSPNet's 1x1 bin)
LATENCY_RUNS = 20


@dataclass(frozen=True)
class Flops:
    """Counted convolution and matmul FLOPs per image at the protocol's geometry."""

    train: float  # one training step's forward and backward
    infer: float  # one forward in eval mode, no TTA


@functools.lru_cache(maxsize=64)
def _count(arch: str, model_json: str, size: int, mode: str) -> Flops:
    model = architectures.create(arch, in_channels=1, classes=1, **json.loads(model_json))
    x = to_network(torch.zeros(COUNT_BATCH, 1, 101, 101), InputConfig(size=size, mode=mode))
    with FlopCounterMode(display=False) as train:
        logits, head = split_outputs(model.train()(x))
        (logits.sum() + (0 if head is None else head.sum())).backward()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as infer:
        model(x)
    return Flops(train.get_total_flops() / COUNT_BATCH, infer.get_total_flops() / COUNT_BATCH)


def count_flops(plan: ArchPlan) -> Flops:
    """FLOPs per image of ``plan``'s model at its input geometry: counted on a fresh CPU copy (the global random
    state is restored, so counting changes nothing a cell draws)."""
    with torch.random.fork_rng(devices=[]):
        return _count(plan.arch, json.dumps(plan.model, sort_keys=True), plan.protocol.input.size,
                      plan.protocol.input.mode)


def latency_ms(model: torch.nn.Module, cfg: InputConfig, device: torch.device, arithmetic: str) -> float:
    """Median milliseconds of one batch-1 forward (no TTA) on ``device`` in ``arithmetic`` (the cell's dtype)."""
    was_training = model.training
    model.eval()
    x = to_network(torch.zeros(1, 1, 101, 101, device=device), cfg).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), autocast(device, arithmetic):
        for i in range(LATENCY_RUNS + 3):
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 3:  # warm-up runs first
                times.append(time.perf_counter() - t0)
    model.train(was_training)
    return 1e3 * statistics.median(times)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps of one epoch over ``n_train`` images: the training loop's rule (``batch_stream`` drops the
    ragged last batch; BatchNorm needs more than one sample), shared by every count of an epoch's cost."""
    return max(n_train // min(batch_size, n_train), 1)


def images_per_epoch(n_dev: int, folds: int, batch_size: int) -> float:
    """Training images one epoch sees, averaged over ``folds`` folds of ``n_dev`` development images cut as evenly
    as they can be (the ragged last batch is dropped): a function of three numbers, so it is known before the folds
    are drawn and the same wherever they are."""
    per_fold = []
    for k in range(folds):
        n = n_dev - (n_dev // folds + (k < n_dev % folds))
        per_fold.append(steps_per_epoch(n, batch_size) * min(batch_size, n))
    return float(np.mean(per_fold))


def derived_epochs(budget: BudgetConfig, flops: Flops, per_epoch_images: float, arch: str) -> int:
    """Epochs of ``arch`` under ``budget``: the budget over one epoch's cost, rounded; less than one epoch is refused."""
    if budget.images is not None:
        target, per_epoch, unit = budget.images, per_epoch_images, "training images"
    else:
        target, per_epoch, unit = budget.train_flops, flops.train * per_epoch_images, "training FLOPs"
    if target < per_epoch:
        raise BenchError(f"protocol.budget: {target:.4g} {unit} is less than one epoch of {arch} "
                         f"({per_epoch:.4g}); raise the budget")
    return max(int(round(target / per_epoch)), 1)


def resolve(cfg: Config, n_dev: int) -> Config:
    """``cfg`` with ``protocol.budget.epochs`` derived for every architecture, for ``n_dev`` development images.

    Epochs already recorded (a resumed run's config) must equal the derived ones: a change means the data or an
    architecture changed, and the run's cells would no longer share one budget."""
    budget = cfg.protocol.budget
    if budget is None:
        return cfg
    derived = {}
    for arch in cfg.architectures:
        plan = cfg.plan(arch)
        per_epoch = images_per_epoch(n_dev, plan.protocol.folds, plan.protocol.batch_size)
        derived[arch] = derived_epochs(budget, count_flops(plan), per_epoch, arch)
    for arch, epochs in budget.epochs.items():
        if arch in derived and derived[arch] != epochs:
            raise BenchError(f"protocol.budget.epochs.{arch}: the config says {epochs}, the budget gives "
                             f"{derived[arch]} on this data (the data or the architecture changed); use a new --out")
    budget = dataclasses.replace(budget, epochs={**budget.epochs, **derived})
    return dataclasses.replace(cfg, protocol=dataclasses.replace(cfg.protocol, budget=budget))


def rederive(cfg: Config, arch: str, n_dev: int) -> Config:
    """``cfg`` with ``arch``'s budget epochs derived anew: a tuning trial changes the architecture's model options or
    batch size, so its cost per epoch, and trains at the budget under its own settings."""
    budget = cfg.protocol.budget
    if budget is None:
        return cfg
    kept = {a: e for a, e in budget.epochs.items() if a != arch}
    protocol = dataclasses.replace(cfg.protocol, budget=dataclasses.replace(budget, epochs=kept))
    return resolve(dataclasses.replace(cfg, protocol=protocol), n_dev)
