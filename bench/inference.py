"""From 101x101 images to network inputs and back, and batched probability prediction with flip TTA.

Used by the trainer (validation, out-of-fold predictions) and by ``salt-bench predict`` (test set), so
both see exactly the same geometry and normalisation.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from architectures.deterministic import resize_bilinear
from bench.config import InputConfig


def autocast(device: torch.device, arithmetic: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where ``arithmetic`` (``bench.runtime.arithmetic``: the cell's dtype) is "bfloat16", plain
    fp32 otherwise."""
    if arithmetic == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_network(x: torch.Tensor, cfg: InputConfig) -> torch.Tensor:
    """Reflect-pad (centred) or resize a (B,C,101,101) batch to the protocol size."""
    h, w = x.shape[-2:]
    if cfg.mode == "resize":
        return F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    top, left = (cfg.size - h) // 2, (cfg.size - w) // 2
    return F.pad(x, (left, cfg.size - w - left, top, cfg.size - h - top), mode="reflect")


def from_network(logits: torch.Tensor, cfg: InputConfig, size: tuple[int, int], *,
                 deterministic: bool = False) -> torch.Tensor:
    """Crop (or resize) network logits back to the original ``size``, before any loss or metric.

    ``deterministic``: resize with ``architectures.deterministic.resize_bilinear`` (fixed-matrix products, whose
    backward is deterministic on CUDA) instead of ``F.interpolate``; the trainer's loss asks for it where
    ``runtime.deterministic_kernels`` says. Without gradients (prediction) torch's kernel is deterministic."""
    h, w = size
    if cfg.mode == "resize":
        if deterministic:
            return resize_bilinear(logits, size, align_corners=False)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    top, left = (cfg.size - h) // 2, (cfg.size - w) // 2
    return logits[..., top : top + h, left : left + w]


def quantise(probs: torch.Tensor) -> np.ndarray:
    """Probabilities as uint8 levels (p * 255, rounded), the form in which OOF and test probabilities are
    stored and thresholded (``bench.metrics.binarise``): a quarter of float32 per image."""
    return (probs.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """The (mean, std) of the development set's pixels in [0, 1]: training, the holdout and the test set are all
    normalised with the statistics of the images the models trained on."""
    pixels = images.astype(np.float64) / 255.0
    return float(pixels.mean()), float(max(pixels.std(), 1e-3))


def normalise(x_uint8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (x_uint8.float() / 255.0 - mean) / std


@dataclass
class Outputs:
    """A model's predictions of a batch of images: mask probabilities, the empty-vs-salt head's probability
    that each image has salt (``None`` for a model without the head), and the throughput."""

    masks: torch.Tensor  # (N, 101, 101) float32
    head: torch.Tensor | None  # (N,) float32
    images_per_s: float


def split_outputs(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mask logits, head logits (N,) or None)`` of a forward pass: a model built with the head returns both."""
    if isinstance(out, tuple):
        masks, head = out
        return masks, head[:, 0]
    return out, None


@torch.no_grad()
def predict_outputs(
    model: torch.nn.Module,
    images: torch.Tensor,
    cfg: InputConfig,
    mean: float,
    std: float,
    arithmetic: str,
    *,
    batch_size: int = 64,
    tta: bool = True,
) -> Outputs:
    """Probabilities of ``images`` (N,1,101,101 uint8), on their device, in ``arithmetic``, and the images/s it took.

    With ``tta`` each prediction, masks and head alike, is the mean of the image's and its horizontal
    flip's probabilities (masks flipped back).
    """
    was_training = model.training
    model.eval()
    device = images.device
    out = torch.empty(images.shape[0], *images.shape[-2:], device=device)
    head_out: torch.Tensor | None = None
    size = tuple(images.shape[-2:])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(0, images.shape[0], batch_size):
        x = normalise(images[i : i + batch_size], mean, std)
        views = [x, x.flip(-1)] if tta else [x]
        with autocast(device, arithmetic):
            xin = to_network(torch.cat(views), cfg).contiguous(memory_format=torch.channels_last)
            logits, head_logits = split_outputs(model(xin))
        probs = torch.sigmoid(from_network(logits.float(), cfg, size))[:, 0]
        head = None if head_logits is None else torch.sigmoid(head_logits.float())
        if tta:
            half = x.shape[0]
            probs = 0.5 * (probs[:half] + probs[half:].flip(-1))
            head = None if head is None else 0.5 * (head[:half] + head[half:])
        out[i : i + batch_size] = probs
        if head is not None:
            if head_out is None:
                head_out = torch.empty(images.shape[0], device=device)
            head_out[i : i + batch_size] = head
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return Outputs(out, head_out, images.shape[0] / max(elapsed, 1e-9))


def ensemble_outputs(
    models: Iterable[torch.nn.Module],
    images: torch.Tensor,
    cfg: InputConfig,
    mean: float,
    std: float,
    arithmetic: str,
    *,
    tta: bool = True,
    batch_size: int = 64,
    chunk: int | None = None,
    each: Callable[[int, torch.Tensor, torch.Tensor | None], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mean over ``models`` of their mask probabilities (N, 101, 101) and, when every model has the head, of the
    head's (N,): the fold ensemble behind the holdout's and the test set's predictions, so both average alike.

    Models are used one at a time as ``models`` yields them (a generator loads each when its turn comes);
    ``each(k, masks, head)`` sees model ``k``'s own probabilities; ``chunk`` images go through ``predict_outputs``
    at a time (all at once by default), ``progress`` is told how many after each.
    """
    n = images.shape[0]
    step = chunk or max(n, 1)
    total = torch.zeros(n, *images.shape[-2:], device=images.device)
    head_total: torch.Tensor | None = torch.zeros(n, device=images.device)
    count = 0
    for model in models:
        masks = torch.empty_like(total)
        head: torch.Tensor | None = torch.empty(n, device=images.device)
        for i in range(0, n, step):
            out = predict_outputs(model, images[i : i + step], cfg, mean, std, arithmetic, batch_size=batch_size,
                                  tta=tta)
            masks[i : i + step] = out.masks
            if out.head is None:
                head = None
            elif head is not None:
                head[i : i + step] = out.head
            if progress is not None:
                progress(out.masks.shape[0])
        del model
        if each is not None:
            each(count, masks, head)
        total += masks
        head_total = None if head is None or head_total is None else head_total + head
        count += 1
    if count == 0:
        raise ValueError("ensemble_outputs: no models")
    return total / count, None if head_total is None else head_total / count
