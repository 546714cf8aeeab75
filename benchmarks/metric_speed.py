"""Time the TGS metric on 18,000 101x101 images (the real test-set size); DESIGN.md asks for well under 1 s.

Run: python benchmarks/metric_speed.py. Masks are random blobs-plus-noise, 39% of truths empty, so
every branch of the metric (empty truth, empty prediction, partial overlap) is exercised.
"""
from __future__ import annotations

import time

import numpy as np

from bench.metrics import best_threshold, dice, iou, tgs_precision

N, SIZE = 18_000, 101


def _timed(fn, repeats: int = 3) -> float:
    """Best of ``repeats`` wall-clock times, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((N, SIZE, SIZE), dtype=np.float32)
    truth = probs > 0.6
    truth[rng.random(N) < 0.39] = False
    pred = probs > rng.uniform(0.3, 0.9, size=(N, 1, 1)).astype(np.float32)
    probs16 = probs.astype(np.float16)
    probs8 = (probs * 255).astype(np.uint8)

    print(f"{N} images of {SIZE}x{SIZE}, best of 3")
    print(f"tgs_precision            {_timed(lambda: tgs_precision(truth, pred)):.3f} s")
    print(f"iou                      {_timed(lambda: iou(truth, pred)):.3f} s")
    print(f"dice                     {_timed(lambda: dice(truth, pred)):.3f} s")
    print(f"best_threshold float16   {_timed(lambda: best_threshold(probs16, truth), 1):.3f} s (19 thresholds)")
    print(f"best_threshold uint8     {_timed(lambda: best_threshold(probs8, truth), 1):.3f} s (19 thresholds)")


if __name__ == "__main__":
    main()
