"""The cell's images on the training device, its fold's split, and the augmented batches of an epoch.

The whole dataset lives on the device as uint8; a batch is an index gather; augmentation is batched on the
device from a generator seeded by (seed, fold, epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from bench import cost
from bench.augment import augment, make_generator
from bench.config import ProtocolConfig
from bench.inference import normalisation

INIT, EPOCH, HALVES = 1, 2, 3  # stream tags: model initialisation, per-epoch batch stream, validation halves


@dataclass
class DeviceData:
    """Train images and masks as (N,1,101,101) uint8 tensors on the training device."""

    ids: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    mean: float
    std: float

    @classmethod
    def from_arrays(cls, ids: list[str], images: np.ndarray, masks: np.ndarray, device: torch.device) -> "DeviceData":
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1).to(device)
        y = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)).unsqueeze(1).to(device)
        return cls(list(ids), x, y, *normalisation(images))


@dataclass
class FoldSplit:
    """Fold ``k``'s train and validation images, on the device, and the two validation halves that
    ``checkpoint: crossfit`` chooses an epoch on (``half_a``: True for half A, a seeded half of each fold)."""

    train_idx: torch.Tensor
    val_idx: torch.Tensor
    val_images: torch.Tensor
    val_truth: np.ndarray
    half_a: np.ndarray
    steps_per_epoch: int

    @classmethod
    def of(cls, data: DeviceData, folds: np.ndarray, fold: int, p: ProtocolConfig) -> FoldSplit:
        fold_t = torch.as_tensor(folds, device=data.images.device)
        train_idx = torch.nonzero(fold_t != fold).flatten()
        val_idx = torch.nonzero(fold_t == fold).flatten()
        steps = cost.steps_per_epoch(len(train_idx), p.batch_size)
        order = np.random.default_rng([p.fold_seed, fold, HALVES]).permutation(len(val_idx))
        half_a = np.zeros(len(val_idx), dtype=bool)
        half_a[order[: len(val_idx) // 2]] = True
        return cls(train_idx, val_idx, data.images[val_idx], data.masks[val_idx, 0].bool().cpu().numpy(), half_a, steps)


def batch_stream(
    p: ProtocolConfig, data: DeviceData, train_idx: torch.Tensor, seed: int, fold: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented (x in [0,1], y in {0,1}) float batches of one epoch; depends on (seed, fold, epoch) only."""
    gen = make_generator(data.images.device, seed, fold, epoch, EPOCH)
    order = train_idx[torch.randperm(len(train_idx), generator=gen, device=data.images.device)]
    bs = min(p.batch_size, len(order))
    n_batches = len(order) // bs  # drop the ragged tail: BatchNorm needs more than one sample
    for b in range(n_batches):
        idx = order[b * bs : (b + 1) * bs]
        x = data.images[idx].float() / 255.0
        y = data.masks[idx].float()
        yield augment(x, y, p.augment, gen)
