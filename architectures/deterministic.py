"""Deterministic CUDA kernels for the two operations of the six architectures that torch has none for.

On CUDA the backward of bilinear interpolation (``upsample_bilinear2d_backward``) and of adaptive average
pooling to more than 1x1 (``_adaptive_avg_pool2d_backward``) accumulate with atomic adds, so the same step can
give different gradients, and ``torch.use_deterministic_algorithms(True)`` raises on them. Both operations are
linear and separable: ``y = A_h @ x @ A_w.T`` with fixed matrices (each row of a bilinear matrix holds the two
interpolation weights, each row of a pooling matrix 1/len over its bin). Computed as matrix products they run
through cuBLAS, deterministic with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), and so does their backward
(``A_h.T @ g @ A_w``).

``make_deterministic(model)`` swaps, in place and keeping every parameter name, what the six architectures use
(smp 0.6.0, read from its source):

- ``nn.Upsample(mode="bilinear")`` (smp's ``SegmentationHead``: DeepLab v3 x8, v3+ x4, PSPNet x8 with
  align_corners=True; the DeepLab v3+ decoder's x2, align_corners=True) -> ``BilinearResize(matrices=True)``;
- ``nn.AdaptiveAvgPool2d`` -> ``AdaptiveAvgPool`` (PSPNet's bins 2, 3, 6 as matrices; 1x1 pooling, as in
  ASPP's image pooling, PSPNet's bin 1 and the empty-vs-salt head, is torch's own mean, deterministic already);
- smp's ``PSPBlock`` and ``ASPPPooling``, whose ``forward`` calls ``F.interpolate(mode="bilinear")`` (back
  to the input size, align_corners True and False): the same children, then ``BilinearResize(matrices=True)``;
- RefineNet's ``BilinearResize`` modules (fusion and final upsampling, align_corners=False) get ``matrices=True``.

UNet (nearest upsampling) and LinkNet (transposed convolutions) have no such operation. The matrices hold
torch's own interpolation weights (its source-coordinate formulas in its precision); the products run in float32
(bf16 inputs are upcast and the result rounded back once, as torch's kernels accumulate bf16 in float32), with
autocast off. The library operations and these agree to float32 rounding (``benchmarks/deterministic_ops.py``
prints the differences). They assume full-precision float32 matrix products: TF32
(``torch.backends.cuda.matmul.allow_tf32``), which the harness leaves off, would round them to 10 bits.

``NONDETERMINISTIC_CUDA_OPS`` lists the aten ops torch documents as having no deterministic CUDA kernel, and
``nondeterministic_ops(fn)`` says which of them ``fn`` dispatches: on the CPU, which is how the tests check that
a model prepared for deterministic CUDA uses none.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPBlock
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

# The operations the docstring of ``torch.use_deterministic_algorithms`` (torch 2.14.1) lists as throwing a
# RuntimeError under ``mode=True`` on CUDA, as the aten ops that implement them. Ops whose condition is an argument
# (NLLLoss's reduction, EmbeddingBag's mode, put_'s accumulate, bincount's weights, scatter_reduce's reduce) are
# listed whatever the argument: over-flagging only makes the check stricter. ``Tensor.resize_`` of quantized
# tensors is left out (no quantized tensor here).
NONDETERMINISTIC_CUDA_OPS = frozenset({
    "avg_pool3d_backward",                                                   # AvgPool3d backward
    "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",        # AdaptiveAvgPool2d/3d backward
    "adaptive_max_pool2d_backward",                                          # AdaptiveMaxPool2d backward
    "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",      # FractionalMaxPool2d/3d backward
    "max_unpool2d", "max_unpool3d",                                          # MaxUnpool1d/2d/3d
    "upsample_linear1d_backward", "upsample_bilinear2d_backward",            # interpolate linear, bilinear,
    "upsample_bicubic2d_backward", "upsample_trilinear3d_backward",          # bicubic, trilinear backward
    "_upsample_bilinear2d_aa_backward", "_upsample_bicubic2d_aa_backward",   # (antialiased variants)
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",  # ReflectionPad backward
    "nll_loss_forward", "nll_loss2d_forward",                                # NLLLoss
    "_ctc_loss_backward", "_cudnn_ctc_loss",                                 # CTCLoss backward
    "_embedding_bag_backward", "_embedding_bag_dense_backward",              # EmbeddingBag backward (mode='max')
    "put", "put_",                                                           # Tensor.put_
    "histc",                                                                 # torch.histc
    "bincount",                                                              # torch.bincount (with weights)
    "median.dim",                                                            # torch.median with indices
    "grid_sampler_2d_backward", "grid_sampler_3d_backward", "cudnn_grid_sampler_backward",  # grid_sample backward
    "scatter_reduce.two", "scatter_reduce_.two",                             # scatter_reduce (reduce='prod')
})


class _OpNames(TorchDispatchMode):
    """The aten ops dispatched while active, as ``name`` and ``name.overload``, below autograd (backward included)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        packet = func.overloadpacket.__name__
        self.names.update((packet, f"{packet}.{func._overloadname}"))
        return func(*args, **(kwargs or {}))


def nondeterministic_ops(fn: Callable[[], Any]) -> list[str]:
    """The ops of ``NONDETERMINISTIC_CUDA_OPS`` that ``fn()`` dispatches (on any device), sorted.

    Run ``fn`` on the CPU to know what it would run on CUDA: the aten ops are the same, only their kernels differ.
    """
    with _OpNames() as seen:
        fn()
    return sorted(seen.names & NONDETERMINISTIC_CUDA_OPS)


def _pair(value: Any) -> tuple[Any, Any]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _matrix(kind: str, n_in: int, n_out: int, align_corners: bool, scale: float | None, device: torch.device,
            dtype: torch.dtype) -> torch.Tensor:
    """The (n_out, n_in) matrix of 1-D bilinear interpolation (``kind="bilinear"``) or adaptive average pooling.

    Bilinear, as torch's kernels compute it (``area_pixel_compute_scale`` and ``area_pixel_compute_source_index``
    in ``dtype``, the accumulation type of float32 and bfloat16 alike): the source coordinate of output ``i`` is
    ``i * s`` with align_corners, ``s = (n_in - 1) / (n_out - 1)``, else ``(i + 0.5) * s - 0.5`` clamped at 0, ``s``
    being ``1 / scale`` when a scale factor was given and ``n_in / n_out`` otherwise; the two neighbours get
    ``1 - f`` and ``f``, its fractional part. Computing the coordinates in that precision, not more, makes the
    weights torch's own. Pooling: bin ``i`` spans ``floor(i * n_in / n_out)`` to ``ceil((i + 1) * n_in / n_out)``,
    weights 1/len. Torch ops only, so that ``torch.compile`` traces it without a graph break.
    """
    with torch.inference_mode(False):  # a cached tensor must be usable by autograd later
        rows = torch.arange(n_out, device=device)
        cols = torch.arange(n_in, device=device)
        if kind == "pool":
            start, end = (rows * n_in) // n_out, -((-(rows + 1) * n_in) // n_out)
            inside = (cols >= start[:, None]) & (cols < end[:, None])
            return inside.to(dtype) / (end - start).to(dtype)[:, None]
        if align_corners:
            step = torch.tensor(n_in - 1, dtype=dtype, device=device) / max(n_out - 1, 1)
            src = rows.double() * step.double()
        else:
            given = scale is not None and scale > 0
            step = torch.tensor(1.0 / scale if given else n_in, dtype=dtype, device=device) / (1 if given else n_out)
            src = (rows.double() + 0.5) * step.double() - 0.5
        src = src.to(dtype).clamp(min=0)  # one rounding of the product and sum, as a fused multiply-add gives
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo.to(dtype)).clamp(0, 1)
        return (1 - frac)[:, None] * (cols == lo[:, None]) + frac[:, None] * (cols == hi[:, None])


_cached_matrix = functools.lru_cache(maxsize=256)(_matrix)


def _weights(*key: Any) -> torch.Tensor:
    """``_matrix(*key)``, built once per key in eager mode; ``torch.compile`` traces the construction instead (its
    inputs are constants), as it would ignore the cache anyway."""
    return _matrix(*key) if torch.compiler.is_compiling() else _cached_matrix(*key)


def _separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols.T`` over the last two dimensions, in ``rows.dtype`` without autocast, back in ``x``'s
    dtype and memory format. Each product has a 2-D right operand, so it is one matrix multiplication."""
    with torch.autocast(x.device.type, enabled=False):
        y = x.to(rows.dtype) @ cols.T
        y = (y.transpose(-1, -2) @ rows.T).transpose(-1, -2)
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y.to(x.dtype).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def resize_bilinear(x: torch.Tensor, size: Sequence[int], align_corners: bool,
                    scale_factor: float | tuple[float, float] | None = None) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=...)`` as two fixed-matrix products (deterministic
    on CUDA, backward included); ``scale_factor``, where the caller's interpolation was given one, sets the source
    coordinates as torch does. ``x`` is (..., H, W)."""
    (h, w), (out_h, out_w) = x.shape[-2:], tuple(size)
    scale_h, scale_w = _pair(scale_factor)
    dtype = torch.promote_types(x.dtype, torch.float32)
    rows = _weights("bilinear", h, out_h, align_corners, scale_h, x.device, dtype)
    cols = _weights("bilinear", w, out_w, align_corners, scale_w, x.device, dtype)
    return _separable(x, rows, cols)


def adaptive_avg_pool(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as two fixed-matrix products (deterministic on CUDA, backward included)."""
    (h, w), (out_h, out_w) = x.shape[-2:], tuple(size)
    dtype = torch.promote_types(x.dtype, torch.float32)
    rows = _weights("pool", h, out_h, False, None, x.device, dtype)
    cols = _weights("pool", w, out_w, False, None, x.device, dtype)
    return _separable(x, rows, cols)


class BilinearResize(nn.Module):
    """Bilinear resize to the size given at each call, or by a fixed ``size`` or ``scale_factor`` (as ``nn.Upsample``).

    ``matrices=False``: torch's ``F.interpolate``; ``matrices=True``: ``resize_bilinear`` (what ``make_deterministic``
    sets). No parameters: switching changes no state dict.
    """

    def __init__(self, *, align_corners: bool, size: int | tuple[int, int] | None = None,
                 scale_factor: float | tuple[float, float] | None = None, matrices: bool = False) -> None:
        super().__init__()
        self.align_corners, self.size, self.scale_factor, self.matrices = align_corners, size, scale_factor, matrices

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        scale = None
        if size is None and self.size is not None:
            size = _pair(self.size)
        elif size is None:
            scale = _pair(self.scale_factor)
            size = tuple(math.floor(n * s) for n, s in zip(x.shape[-2:], scale))
        if self.matrices:
            return resize_bilinear(x, size, self.align_corners, scale)
        return F.interpolate(x, size=None if scale else tuple(size), scale_factor=scale, mode="bilinear",
                             align_corners=self.align_corners)

    def extra_repr(self) -> str:
        fixed = f", size={self.size}" if self.size is not None else (
            f", scale_factor={self.scale_factor}" if self.scale_factor is not None else "")
        return f"align_corners={self.align_corners}{fixed}, matrices={self.matrices}"


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d`` with ``adaptive_avg_pool``'s matrices; to 1x1 it is torch's, which is a mean."""

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(n if s is None else s for n, s in zip(x.shape[-2:], _pair(self.output_size)))
        if size == (1, 1):
            return F.adaptive_avg_pool2d(x, 1)
        return adaptive_avg_pool(x, size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class DeterministicPSPBlock(nn.Module):
    """smp's ``PSPBlock`` (pool, 1x1 conv, bilinear back to the input size with align_corners=True), same ``pool``."""

    def __init__(self, block: PSPBlock) -> None:
        super().__init__()
        self.pool_size = block.pool_size
        self.pool = block.pool
        self.resize = BilinearResize(align_corners=True, matrices=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize(self.pool(x), x.shape[-2:])


class DeterministicASPPPooling(nn.Module):
    """smp's ``ASPPPooling`` (its children in order, then bilinear back to the input size, align_corners=False),
    with the same child names, so the same parameter names."""

    def __init__(self, pooling: ASPPPooling) -> None:
        super().__init__()
        self.body = [name for name, _ in pooling.named_children()]
        for name, child in pooling.named_children():
            self.add_module(name, child)
        self.resize = BilinearResize(align_corners=False, matrices=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self.body:
            y = getattr(self, name)(y)
        return self.resize(y, x.shape[-2:])


def _replacement(module: nn.Module) -> nn.Module | None:
    """The deterministic module for ``module``, or None where it has nothing to replace."""
    if isinstance(module, PSPBlock):
        return DeterministicPSPBlock(module)
    if isinstance(module, ASPPPooling):
        return DeterministicASPPPooling(module)
    if isinstance(module, nn.Upsample) and module.mode == "bilinear":
        return BilinearResize(align_corners=bool(module.align_corners), size=module.size,
                              scale_factor=module.scale_factor, matrices=True)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return AdaptiveAvgPool(module.output_size)
    return None


def make_deterministic(model: nn.Module) -> nn.Module:
    """Swap, in place, the modules that would run bilinear interpolation or adaptive average pooling with torch's
    nondeterministic CUDA backward for fixed-matrix equivalents (see the module docstring); returns ``model``.

    Parameter and buffer names are unchanged, so a state dict loads into the model either way. Idempotent.
    """
    for parent in list(model.modules()):
        if isinstance(parent, BilinearResize):
            parent.matrices = True
        for name, child in list(parent.named_children()):
            replacement = _replacement(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    return model
