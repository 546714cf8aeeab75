"""Synthetic label statistics vs the real TGS train set, and the generation time on one core.

Usage: python benchmarks/synthetic_stats.py [--n-train 4000] [--n-test 18000] [--seed 0]
Run it single-threaded (OMP_NUM_THREADS=1) to measure the one-core budget (under 60 s for 4000 + 18000).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.data.folds import N_CLASSES, coverage_class
from bench.data.synthetic import REAL_CLASS_COUNTS, REAL_VERTICAL, generate


def tv_distance(counts: np.ndarray, reference: np.ndarray) -> float:
    """Total-variation distance between two histograms, each normalised to a distribution."""
    p, q = np.asarray(counts, float), np.asarray(reference, float)
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def vertical_count(masks: np.ndarray) -> int:
    """Non-empty masks whose every column is all salt or all empty."""
    full, empty = masks.all(1), ~masks.any(1)
    return int(((full | empty).all(1) & masks.any((1, 2))).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=18000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start, cpu_start = time.perf_counter(), time.process_time()
    data = generate(args.n_train, args.n_test, args.seed)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    real = np.asarray(REAL_CLASS_COUNTS)
    print(f"generated {args.n_train} train + {args.n_test} test in {seconds:.1f} s "
          f"({1000 * seconds / max(args.n_train + args.n_test, 1):.2f} ms/image), CPU time {cpu:.1f} s "
          "(wall time inflates when other processes share the core)")
    for name, masks, images in (("train", data.masks, data.images), ("test", data.test_masks, data.test_images)):
        if not len(masks):
            continue
        counts = np.bincount(coverage_class(masks), minlength=N_CLASSES)
        grey = int((images.reshape(len(images), -1).std(1) == 0).sum())
        print(f"\n[{name}] {len(masks)} images")
        print(f"  empty fraction   {counts[0] / len(masks):.4f}   (real {real[0] / real.sum():.4f}, bound 0.39 +- 0.02)")
        print(f"  coverage classes {counts.tolist()}")
        print(f"  real, rescaled   {np.round(real / real.sum() * len(masks)).astype(int).tolist()}")
        print(f"  TV distance      {tv_distance(counts, real):.4f}   (bound 0.10)")
        print(f"  vertical masks   {vertical_count(masks)}   (real {REAL_VERTICAL} per 4000, here expected "
              f"{REAL_VERTICAL * len(masks) / real.sum():.0f})")
        print(f"  full masks       {int(masks.all((1, 2)).sum())}   constant grey {grey} ({grey / len(masks):.2%}, real 2%)")
        print(f"  grey mean {images.mean():.1f}, per-image std {images.reshape(len(images), -1).std(1).mean():.1f}")
    z = np.array([data.depths[i] for i in data.ids + data.test_ids])
    salt = np.concatenate([data.masks, data.test_masks]).any((1, 2))
    print(f"\ndepth z in [{z.min()}, {z.max()}], corr(z, has salt) = {np.corrcoef(z, salt)[0, 1]:.3f} (real 0.125)")


if __name__ == "__main__":
    main()
