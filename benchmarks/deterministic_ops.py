"""The deterministic kernels ``runtime.deterministic`` gives a CUDA run, checked and costed on the CPU.

Three tables, per architecture:

1. **Dispatch trace**: the ops of ``architectures.deterministic.NONDETERMINISTIC_CUDA_OPS`` (torch documents no
   deterministic CUDA kernel for them) that the harness dispatches in one training step per loss stage (batch,
   augmentation, ``Trainer.step``) and one validation, with the library's modules (``before``) and with the
   trainer as ``runtime.deterministic`` prepares it on CUDA (``after``), at quick.yaml's and benchmark.yaml's
   geometry (batch 2, the empty-vs-salt head on, so its pooling is traced too). The aten ops are those CUDA
   would run; only their kernels differ.
2. **Replacement against library**: every bilinear resize and adaptive average pooling the prepared model runs
   (hooked at quick.yaml's geometry, on the activations it really sees), plus the loss's resize of the logits,
   recomputed by torch's op: max abs difference in float32 and bfloat16, forward and backward (gradient of a
   fixed random projection of the output), and the largest magnitude of the library's result for scale.
3. **Step time on the CPU**: ``Trainer.step`` at quick.yaml's geometry and arithmetic, library against
   deterministic kernels, interleaved, median of ``--steps``; the ratio is the deterministic variant's cost.
   A CPU figure: on CUDA the replacement runs cuBLAS instead of the atomic-add kernels (``gpu_bench.py``
   measures that).

    python benchmarks/deterministic_ops.py [--archs unet,pspnet] [--steps 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import architectures
from architectures.deterministic import AdaptiveAvgPool, BilinearResize, nondeterministic_ops, resize_bilinear
from bench import config, runtime
from bench.cell.data import DeviceData, FoldSplit
from bench.cell.loop import train_one_epoch, validate
from bench.cell.trainer import Trainer
from bench.config import Config
from bench.rundir import Cell

CONFIGS = ("quick", "benchmark")
#: what the trace sets on each config: the CPU, two images a batch, the empty-vs-salt head on
TRACE_SET = ["runtime.device=cpu", "protocol.batch_size=2", "protocol.empty_head={weight: 0.1, dropout: 0.2}"]


def load(name: str, extra: list[str] | None = None) -> Config:
    return config.load([config.CONFIG_DIR / f"{name}.yaml"], [*TRACE_SET, *(extra or [])])


def random_data(n: int) -> DeviceData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) < rng.random((n, 1, 1))
    return DeviceData.from_arrays([f"{i:04d}" for i in range(n)], images, masks, torch.device("cpu"))


def trainer_for(cfg: Config, arch: str, data: DeviceData, cuda_kernels: bool) -> Trainer:
    """The harness's trainer on the CPU, its model and loss prepared as on CUDA (``cuda_kernels``) or not."""
    with mock.patch.object(runtime, "deterministic_kernels", lambda deterministic, device: cuda_kernels and deterministic):
        return Trainer(cfg.plan(arch), Cell(arch, 0, 0), data, steps_per_epoch=1)


def harness_ops(cfg: Config, arch: str, cuda_kernels: bool) -> list[str]:
    """Flagged ops of one training step per loss stage and one validation (two images each), as ``trainer_for``."""
    p = cfg.plan(arch).protocol
    data = random_data(2 * p.batch_size)
    folds = np.r_[np.ones(p.batch_size, dtype=np.int64), np.zeros(p.batch_size, dtype=np.int64)]
    split = FoldSplit.of(data, folds, 0, p)
    trainer = trainer_for(cfg, arch, data, cuda_kernels)
    cell = Cell(arch, 0, 0)
    stages = [0] if p.loss.then is None else [0, p.loss.switch_epoch]
    ops = set()
    for epoch in stages:
        ops.update(nondeterministic_ops(lambda e=epoch: train_one_epoch(trainer, data, split, cell, e)))
    ops.update(nondeterministic_ops(lambda: validate(trainer, data, split)))
    return sorted(ops)


def trace_table(archs: list[str], configs: tuple[str, ...] = CONFIGS) -> dict[tuple[str, str], tuple[list[str], list[str]]]:
    """(config, arch) -> (flagged ops before, after)."""
    table = {}
    for name in configs:
        cfg = load(name)
        for arch in archs:
            table[(name, arch)] = (harness_ops(cfg, arch, False), harness_ops(cfg, arch, True))
    return table


def markdown_trace(table: dict[tuple[str, str], tuple[list[str], list[str]]]) -> str:
    configs = list(dict.fromkeys(c for c, _ in table))
    archs = list(dict.fromkeys(a for _, a in table))
    head = "| arch | " + " | ".join(f"{c}: before | {c}: after" for c in configs) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(configs))]
    for arch in archs:
        cells = [", ".join(ops) or "none" for c in configs for ops in table[(c, arch)]]
        rows.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# --- replacement against library ------------------------------------------------------------------------------------

@dataclass
class OpDiff:
    """One replaced operation, maxima over its calls in one forward pass."""

    op: str  # e.g. "bilinear 8x8->64x64 ac=True"
    calls: int
    scale: float  # max |library output| (float32)
    grad_scale: float  # max |library input gradient| (float32)
    fwd_fp32: float
    bwd_fp32: float
    fwd_bf16: float
    bwd_bf16: float


def _library(module: nn.Module) -> Callable[..., torch.Tensor]:
    """torch's own op for a replacement module: ``BilinearResize`` without matrices, ``nn.AdaptiveAvgPool2d``."""
    if isinstance(module, BilinearResize):
        return BilinearResize(align_corners=module.align_corners, size=module.size, scale_factor=module.scale_factor)
    return nn.AdaptiveAvgPool2d(module.output_size)


def _diffs(ours: Callable[..., torch.Tensor], library: Callable[..., torch.Tensor], x: torch.Tensor,
           dtype: torch.dtype) -> tuple[float, float, float, float]:
    """(max |library output|, max |library input gradient|, forward and backward max abs difference) of the two
    ops on ``x`` in ``dtype``."""
    outs, grads = [], []
    for fn in (ours, library):
        xi = x.detach().to(dtype).requires_grad_(True)
        y = fn(xi)
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
        (y * weights).sum().backward()
        outs.append(y.detach().float())
        grads.append(xi.grad.float())
    return (outs[1].abs().max().item(), grads[1].abs().max().item(), (outs[0] - outs[1]).abs().max().item(),
            (grads[0] - grads[1]).abs().max().item())


def op_differences(model: nn.Module, x: torch.Tensor) -> list[OpDiff]:
    """Every ``BilinearResize``/``AdaptiveAvgPool`` call of ``model(x)`` (a model after ``make_deterministic``),
    recomputed on the same input by the replacement and by torch, in float32 and bfloat16."""
    calls: list[tuple[str, Callable[..., torch.Tensor], Callable[..., torch.Tensor], torch.Tensor]] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        inp, rest = args[0], args[1:]
        if isinstance(module, BilinearResize):
            name = f"bilinear {'x'.join(map(str, inp.shape[-2:]))}->{'x'.join(map(str, out.shape[-2:]))} " \
                   f"ac={module.align_corners}"
        else:
            name = f"avgpool {'x'.join(map(str, inp.shape[-2:]))}->{'x'.join(map(str, out.shape[-2:]))}"
        library = _library(module)
        calls.append((name, lambda t, m=module, r=rest: m(t, *r), lambda t, f=library, r=rest: f(t, *r),
                      inp.detach().float().clone()))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
               if isinstance(m, (BilinearResize, AdaptiveAvgPool))]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    by_op: dict[str, list[tuple[float, ...]]] = {}
    for name, ours, library, inp in calls:
        by_op.setdefault(name, []).append((*_diffs(ours, library, inp, torch.float32),
                                           *_diffs(ours, library, inp, torch.bfloat16)[2:]))
    return [OpDiff(name, len(rows), *(max(r[i] for r in rows) for i in range(6))) for name, rows in by_op.items()]


def loss_resize_difference(cfg: Config, logits: torch.Tensor) -> list[OpDiff]:
    """The trainer's resize of the logits back to 101x101 (``input.mode: resize``): ``from_network``'s two kernels."""
    if cfg.protocol.input.mode != "resize":
        return []
    size = (101, 101)

    def ours(t: torch.Tensor) -> torch.Tensor:
        return resize_bilinear(t, size, align_corners=False)

    def library(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    rows = [*_diffs(ours, library, logits, torch.float32), *_diffs(ours, library, logits, torch.bfloat16)[2:]]
    side = "x".join(map(str, logits.shape[-2:]))
    return [OpDiff(f"loss resize {side}->101x101 ac=False", 1, *rows)]


def arch_differences(cfg: Config, arch: str) -> list[OpDiff]:
    """``op_differences`` of ``arch`` at ``cfg``'s geometry (seeded random weights and a random batch of 2)."""
    torch.manual_seed(0)
    plan = cfg.plan(arch)
    model = architectures.make_deterministic(architectures.create(arch, in_channels=1, classes=1, **plan.model))
    size = plan.protocol.input.size
    x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model.eval()(x)[0]
    return op_differences(model, x) + loss_resize_difference(cfg, logits)


# --- step time ---------------------------------------------------------------------------------------------------------

def step_times(cfg: Config, arch: str, steps: int) -> tuple[float, float]:
    """Median seconds of ``Trainer.step`` with the library's and the deterministic kernels, interleaved, after one
    warm-up step each."""
    p = cfg.plan(arch).protocol
    data = random_data(p.batch_size)
    x, y = data.images.float() / 255, data.masks.float()
    trainers = [trainer_for(cfg, arch, data, kernels) for kernels in (False, True)]
    times: list[list[float]] = [[], []]
    for i in range(steps + 1):
        for j, trainer in enumerate(trainers):
            t0 = time.perf_counter()
            trainer.step(x, y, 0)
            if i:
                times[j].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def _fmt(v: float) -> str:
    return f"{v:.1e}" if v else "0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", help="comma-separated architectures (default: all six)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: the quick profile's workers)")
    args = ap.parse_args()
    archs = args.archs.split(",") if args.archs else architectures.names()
    unknown = [a for a in archs if a not in architectures.names()]
    if unknown:
        ap.error(f"--archs: unknown architecture {unknown[0]} (valid: {', '.join(architectures.names())})")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {runtime.cpu_name()}, {args.threads} thread(s)\n")

    print("Dispatch trace: ops without a deterministic CUDA kernel in a harness step per loss stage + a validation")
    print(markdown_trace(trace_table(archs)))

    quick = config.load([config.CONFIG_DIR / "quick.yaml"], ["runtime.device=cpu"])
    print("\nReplacement against library at quick.yaml's geometry (max abs difference; out, grad: max |library output|,"
          " max |library input gradient| in float32)")
    header = ["arch", "op", "calls", "out", "grad", "fwd_fp32", "bwd_fp32", "fwd_bf16", "bwd_bf16"]
    print("  ".join(header))
    for arch in archs:
        for d in arch_differences(load("quick"), arch):
            print("  ".join([arch, d.op.replace(" ", "_"), str(d.calls), f"{d.scale:.2f}", f"{d.grad_scale:.2f}",
                             *map(_fmt, (d.fwd_fp32, d.bwd_fp32, d.fwd_bf16, d.bwd_bf16))]))

    device = runtime.setup(quick)
    torch.set_num_threads(args.threads)
    print(f"\nTrainer.step on the CPU at quick.yaml's geometry ({quick.protocol.input.size} px, batch "
          f"{quick.protocol.batch_size}, {runtime.arithmetic(quick.runtime, device)}), median of {args.steps}")
    print("arch  library_ms  deterministic_ms  ratio")
    for arch in archs:
        lib, det = step_times(quick, arch, args.steps)
        print(f"{arch}  {1e3 * lib:.1f}  {1e3 * det:.1f}  {det / lib:.3f}")


if __name__ == "__main__":
    main()
