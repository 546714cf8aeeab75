"""Harness training step vs. a bare ``loss(model(x), y).backward(); opt.step()`` on the same batch.

Prints, per architecture, images/s of the bare step, of the harness step (normalise, pad, forward, crop,
staged loss, backward, optimiser, schedule) and of the harness step plus its batch gather and on-device
augmentation, with their ratios. Both variants are timed interleaved in one process, so drift on a
shared machine hits both equally; the median of the repeats is reported.

    python benchmarks/step_overhead.py [--device cpu] [--encoder resnet18] [--batch 16] [--input 128:pad] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import architectures
from bench import config, losses
from bench.inference import to_network
from bench.rundir import Cell
from bench.train import DeviceData, Trainer, batch_stream


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--input", default="128:pad", help="SIZE:MODE of the network input, e.g. 128:pad or 64:resize")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    ap.add_argument("--archs", default=",".join(architectures.names()))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    size, mode = args.input.split(":")
    cfg = config.load([config.CONFIG_DIR / "quick.yaml"], [f"protocol.model.encoder={args.encoder}",
                                                           f"protocol.batch_size={args.batch}",
                                                           f"protocol.input.size={size}", f"protocol.input.mode={mode}"])
    rng = np.random.default_rng(0)
    n = args.batch * 4
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) > 0.6
    data = DeviceData.from_arrays([f"{i:04d}" for i in range(n)], images, masks, device)
    all_idx = torch.arange(n, device=device)
    x, y = next(batch_stream(cfg.protocol, data, all_idx, 0, 0, 0))
    x_bare = to_network((x - data.mean) / data.std, cfg.protocol.input)
    y_bare = to_network(y, cfg.protocol.input)

    print(f"device {device}, encoder {args.encoder}, batch {args.batch}, input {args.input}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} x {args.steps} steps")
    header = f"{'arch':<14} {'bare img/s':>11} {'harness img/s':>14} {'ratio':>6} {'+augment img/s':>15} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for arch in args.archs.split(","):
        trainer = Trainer(cfg.plan(arch), Cell(arch, 0, 0), data, steps_per_epoch=1000)
        bare_model = architectures.create(arch, in_channels=1, classes=1, **cfg.plan(arch).model).to(device)
        if device.type == "cuda":
            bare_model = bare_model.to(memory_format=torch.channels_last)
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-4)
        bare_loss = losses.WeightedLoss(cfg.protocol.loss.first)  # the same loss the harness uses at epoch 0
        epoch = 0

        def bare() -> None:
            for _ in range(args.steps):
                bare_opt.zero_grad(set_to_none=True)
                bare_loss(bare_model(x_bare), y_bare).backward()
                bare_opt.step()

        def harness() -> None:
            for _ in range(args.steps):
                trainer.step(x, y, epoch)

        def harness_with_data() -> None:
            stream = batch_stream(cfg.protocol, data, all_idx, 0, 0, 1)
            for _ in range(args.steps):
                xb, yb = next(stream, (x, y))
                trainer.step(xb, yb, epoch)

        for fn in (bare, harness, harness_with_data):  # warm-up
            fn()
        times: dict[str, list[float]] = {"bare": [], "harness": [], "full": []}
        for _ in range(args.repeats):
            times["bare"].append(_timed(bare, device))
            times["harness"].append(_timed(harness, device))
            times["full"].append(_timed(harness_with_data, device))
        ips = {k: args.batch * args.steps / statistics.median(v) for k, v in times.items()}
        print(f"{arch:<14} {ips['bare']:>11.1f} {ips['harness']:>14.1f} {ips['bare'] / ips['harness']:>6.3f} "
              f"{ips['full']:>15.1f} {ips['bare'] / ips['full']:>6.3f}")
    print("ratio = bare img/s / harness img/s (time per image, harness over bare); target <= 1.05")


if __name__ == "__main__":
    main()
