"""From 101x101 images to network inputs and back, and batched probability prediction with flip TTA.

Used by the trainer (validation, out-of-fold predictions) and by ``salt-bench predict`` (test set), so
both see exactly the same geometry and normalisation.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import InputConfig


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 elsewhere (the only device-dependent choice in the harness)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_network(x: torch.Tensor, cfg: InputConfig) -> torch.Tensor:
    """Reflect-pad (centred) or resize a (B,C,101,101) batch to the protocol size."""
    h, w = x.shape[-2:]
    if cfg.mode == "resize":
        return F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    top, left = (cfg.size - h) // 2, (cfg.size - w) // 2
    return F.pad(x, (left, cfg.size - w - left, top, cfg.size - h - top), mode="reflect")


def from_network(logits: torch.Tensor, cfg: InputConfig, size: tuple[int, int]) -> torch.Tensor:
    """Crop (or resize) network logits back to the original ``size``, before any loss or metric."""
    h, w = size
    if cfg.mode == "resize":
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    top, left = (cfg.size - h) // 2, (cfg.size - w) // 2
    return logits[..., top : top + h, left : left + w]


def quantise(probs: torch.Tensor) -> np.ndarray:
    """Probabilities as uint8 levels (p * 255, rounded), the form in which OOF and test probabilities are
    stored and thresholded (``bench.metrics.binarise``): a quarter of float32 per image."""
    return (probs.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def normalise(x_uint8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (x_uint8.float() / 255.0 - mean) / std


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    cfg: InputConfig,
    mean: float,
    std: float,
    *,
    batch_size: int = 64,
    tta: bool = True,
) -> tuple[torch.Tensor, float]:
    """Probabilities (N,101,101 float32 on the images' device) and the images/s it took.

    With ``tta`` the prediction is the mean of the image and its horizontal flip (flipped back).
    """
    was_training = model.training
    model.eval()
    device = images.device
    out = torch.empty(images.shape[0], *images.shape[-2:], device=device)
    size = tuple(images.shape[-2:])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(0, images.shape[0], batch_size):
        x = normalise(images[i : i + batch_size], mean, std)
        views = [x, x.flip(-1)] if tta else [x]
        with autocast(device):
            logits = model(to_network(torch.cat(views), cfg).contiguous(memory_format=torch.channels_last))
        probs = torch.sigmoid(from_network(logits.float(), cfg, size))[:, 0]
        if tta:
            half = x.shape[0]
            probs = 0.5 * (probs[:half] + probs[half:].flip(-1))
        out[i : i + batch_size] = probs
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return out, images.shape[0] / max(elapsed, 1e-9)
