"""Time the batched per-image Lovasz hinge against smp's Python loop over images, forward and backward.

Run: python benchmarks/lovasz_speed.py [--device cuda]. Batches of 101x101 logits with ~30% of masks empty, as
in TGS; prints the time per call of each and smp's time over ours. On the CPU the loop costs little; on a GPU
each image of smp's loop is some thirty kernel launches, which is what the batched version removes.
"""
from __future__ import annotations

import argparse
import time

import torch
from segmentation_models_pytorch.losses import LovaszLoss

from bench.losses import lovasz_hinge_per_image

SIZE = 101


def _per_call(fn, logits: torch.Tensor, target: torch.Tensor, calls: int) -> float:
    """Best of 3 mean wall-clock seconds per forward+backward call, after a warm-up call."""
    def once() -> None:
        leaf = logits.detach().requires_grad_(True)
        fn(leaf, target).backward()

    once()
    best = float("inf")
    for _ in range(3):
        if logits.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            once()
        if logits.is_cuda:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    smp = LovaszLoss(mode="binary", per_image=True)
    gen = torch.Generator().manual_seed(0)
    print(f"{device}, {SIZE}x{SIZE}, forward+backward, best of 3 x {args.calls} calls")
    for batch in (8, 32):
        logits = torch.randn(batch, 1, SIZE, SIZE, generator=gen).to(device)
        target = (torch.rand(batch, 1, SIZE, SIZE, generator=gen) > 0.6).float()
        target[torch.rand(batch, generator=gen) < 0.3] = 0
        target = target.to(device)
        t_smp = _per_call(smp, logits, target, args.calls)
        t_ours = _per_call(lovasz_hinge_per_image, logits, target, args.calls)
        print(f"batch {batch:3d}  smp {t_smp * 1e3:8.2f} ms  batched {t_ours * 1e3:8.2f} ms  smp/batched {t_smp / t_ours:5.2f}")


if __name__ == "__main__":
    main()
