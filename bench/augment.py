"""Batched joint image+mask augmentation on the device, driven by an explicit generator.

The stream of batches depends only on (protocol seed, fold, epoch): the permutation and every random draw
come from one ``torch.Generator`` seeded from those, and no draw depends on the model, so every
architecture trained on a fold sees bit-identical batches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import AugmentConfig


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of integers (e.g. seed, fold, epoch), well mixed by SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def make_generator(device: torch.device, *parts: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(stream_seed(*parts))
    return gen


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def augment(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images ``x`` (B,1,H,W float in [0,1]) and masks ``y`` (B,1,H,W float {0,1}) together.

    Every draw is made for the whole batch whatever the probabilities, so the generator advances the
    same way for any config with the same batch size; nothing reads a tensor back to the host.
    """
    n, device = x.shape[0], x.device
    flip = torch.rand(n, generator=gen, device=device) < cfg.hflip
    affine = torch.rand(n, generator=gen, device=device) < cfg.shift_scale
    scale = _uniform(n, 1 - cfg.max_scale, 1 + cfg.max_scale, gen, device)
    shift = _uniform(2 * n, -2 * cfg.max_shift, 2 * cfg.max_shift, gen, device).view(n, 2)
    color = torch.rand(n, generator=gen, device=device) < cfg.color
    contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen, device)
    brightness = _uniform(n, -cfg.brightness, cfg.brightness, gen, device)

    sel = flip.view(n, 1, 1, 1)
    x = torch.where(sel, x.flip(-1), x)
    y = torch.where(sel, y.flip(-1), y)

    # Warped for every image and selected, not skipped when no image is drawn: asking would make the host wait.
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    xw = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    yw = (F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False) > 0.5).to(y.dtype)
    sel = affine.view(n, 1, 1, 1)
    x = torch.where(sel, xw, x)
    y = torch.where(sel, yw, y)

    c = torch.where(color, contrast, torch.ones_like(contrast)).view(n, 1, 1, 1)
    b = torch.where(color, brightness, torch.zeros_like(brightness)).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean + b).clamp_(0.0, 1.0)
    return x, y
