"""What each architecture costs at the shipped geometries: counted FLOPs, parameters and measured CPU images/s.

For each config (default: quick.yaml and benchmark.yaml), per architecture: training GFLOP per image (forward and
backward, ``bench.cost.count_flops``: the number every cell records and ``protocol.budget`` divides), inference
GFLOP per image (one forward, no TTA), parameters, and training images/s of the real ``Trainer.step`` on this CPU
(one thread, the config's arithmetic on this CPU, median of ``--repeats`` timed passes of ``--steps`` steps after
a warm-up pass), then what one epoch of each costs relative to the cheapest, in FLOPs and in CPU seconds.

    python benchmarks/cost_table.py [--configs quick.yaml,benchmark.yaml] [--archs unet,...] [--steps 4] [--repeats 3] [--batch 8]
"""
from __future__ import annotations

import argparse

import torch
from cpu_step_speed import time_steps

from bench import config, cost, runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="quick.yaml,benchmark.yaml")
    ap.add_argument("--archs", default=None, help="comma-separated (default: every architecture of each config)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="batch of the timing (images/s barely depends on it)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.configs.split(","):
        cfg = config.load([config.CONFIG_DIR / name], ["runtime.device=cpu", f"protocol.batch_size={args.batch}"])
        dtype = runtime.arithmetic(cfg.runtime, torch.device("cpu"), announce=True)
        p = cfg.protocol
        rows = []
        for arch in args.archs.split(",") if args.archs else cfg.architectures:
            rows.append((arch, cost.count_flops(cfg.plan(arch)), _params(cfg, arch),
                         time_steps(cfg, arch, args.steps, args.repeats)[0]))
        print(f"\n{name}: {p.model.encoder}, {p.input.size} px ({p.input.mode}), CPU 1 thread, {dtype}, "
              f"batch {args.batch} for the timing")
        print(f"{'arch':<15}{'train GFLOP/img':>16}{'infer GFLOP/img':>16}{'params (M)':>12}{'CPU img/s':>11}"
              f"{'FLOPs x':>9}{'CPU s x':>9}")
        cheapest = min(r[1].train for r in rows)
        fastest = max(r[3] for r in rows)
        for arch, flops, params, ips in rows:
            print(f"{arch:<15}{flops.train / 1e9:>16.3f}{flops.infer / 1e9:>16.3f}{params / 1e6:>12.2f}{ips:>11.1f}"
                  f"{flops.train / cheapest:>9.2f}{fastest / ips:>9.2f}")
    print("\nFLOPs x / CPU s x: one epoch's training cost relative to the cheapest architecture, counted and measured")


def _params(cfg: config.Config, arch: str) -> int:
    import architectures

    with torch.random.fork_rng(devices=[]):
        model = architectures.create(arch, in_channels=1, classes=1, **cfg.plan(arch).model)
    return sum(t.numel() for t in model.parameters())


if __name__ == "__main__":
    main()
