"""Where do the CPU profile's minutes go? Training images/s of the harness step per architecture, per candidate.

A candidate is a set of ``--set`` overrides on configs/quick.yaml (encoder, batch size, input size, precision,
compile, ...). Each is timed with the real ``Trainer.step`` on one augmented batch stream, on the threads this
process has (``--threads``, default 1: the quick profile runs single-threaded workers), in the arithmetic its
``runtime.precision`` gives on this CPU, median of the repeats after a warm-up epoch. The table prints img/s per
architecture, the time one epoch of every architecture would take at the quick profile's images per fold (so
candidates can be compared at equal minutes), and the warm-up epochs' total (where ``torch.compile`` pays).

    python benchmarks/cpu_step_speed.py [--candidate NAME=KEY=VALUE;KEY=VALUE ...] [--threads 1] [--steps 8]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import architectures
from bench import config
from bench.cell.data import DeviceData, batch_stream
from bench.cell.trainer import Trainer
from bench.config import ArchPlan
from bench.rundir import Cell

#: candidates measured when none is given: the shipped profile, then one change each
DEFAULT_CANDIDATES = {
    "quick": [],
    "float32": ["runtime.precision=float32"],
    "batch16": ["protocol.batch_size=16"],
    "batch32": ["protocol.batch_size=32"],
    "size96": ["protocol.input.size=96"],
    "resnet10t": ["protocol.model.encoder=tu-resnet10t"],
    "mobilenetv3": ["protocol.model.encoder=tu-mobilenetv3_small_050"],
}


def parse_candidate(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition("=")
    return name, [s for s in sets.split(";") if s]


def harness(cfg: config.Config, arch: str, steps: int) -> tuple[ArchPlan, DeviceData, torch.Tensor, Trainer]:
    """``arch``'s real trainer under ``cfg`` on the CPU, with ``steps`` batches of random images and masks (and their
    indices) to feed it; the arithmetic is the config's on this CPU (``runtime.arithmetic``, the trainer's)."""
    plan = cfg.plan(arch)
    n = plan.protocol.batch_size * steps
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) > 0.6
    data = DeviceData.from_arrays([f"{i:04d}" for i in range(n)], images, masks, torch.device("cpu"))
    return plan, data, torch.arange(n), Trainer(plan, Cell(arch, 0, 0), data, steps_per_epoch=steps)


def time_candidate(overrides: list[str], arch: str, steps: int, repeats: int) -> tuple[float, float]:
    """``time_steps`` under configs/quick.yaml with ``overrides``."""
    return time_steps(config.load([config.CONFIG_DIR / "quick.yaml"], ["runtime.device=cpu", *overrides]), arch, steps,
                      repeats)


def time_steps(cfg: config.Config, arch: str, steps: int, repeats: int) -> tuple[float, float]:
    """Training images/s of ``Trainer.step`` (gather + augment included) for one architecture, the median of
    ``repeats`` passes of ``steps`` steps, and the seconds of the warm-up pass before them."""
    plan, data, idx, trainer = harness(cfg, arch, steps)
    n = len(idx)

    def epoch(e: int) -> float:
        t0 = time.perf_counter()
        for x, y in batch_stream(plan.protocol, data, idx, 0, 0, e):
            trainer.step(x, y, 0)
        return time.perf_counter() - t0

    warm_up = epoch(0)
    return n / statistics.median(epoch(e + 1) for e in range(repeats)), warm_up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=KEY=VALUE;...",
                    help="a candidate's overrides on configs/quick.yaml (repeatable); default: a built-in list")
    ap.add_argument("--archs", default=",".join(architectures.names()))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=240, help="training images per fold, to turn img/s into s/epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    candidates = dict(map(parse_candidate, args.candidate)) if args.candidate else DEFAULT_CANDIDATES
    archs = args.archs.split(",")
    print(f"CPU, {torch.get_num_threads()} thread(s), median of {args.repeats} x {args.steps} steps after a warm-up")
    print(f"{'candidate':<16} " + " ".join(f"{a:>13}" for a in archs) + f" {'s/epoch all':>12} {'warm-up s':>10}")
    for name, overrides in candidates.items():
        timed = [time_candidate(overrides, a, args.steps, args.repeats) for a in archs]
        per_epoch = sum(args.images / ips for ips, _ in timed)
        print(f"{name:<16} " + " ".join(f"{ips:>13.0f}" for ips, _ in timed)
              + f" {per_epoch:>12.1f} {sum(w for _, w in timed):>10.1f}", flush=True)
    print(f"img/s per architecture; s/epoch all = one epoch of every architecture at {args.images} training images; "
          f"warm-up s = the first epochs' total ({args.steps} steps each)")


if __name__ == "__main__":
    main()
