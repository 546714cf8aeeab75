"""Is the verdict calibrated? Simulate whole runs from variance components and count its claims.

Each simulated run draws per-image scores of 6 architectures, (folds x seeds) trained models each, on the same
images, from a crossed random-effects model with every source the real runs have::

    Y[a, k, s, i] = mu_a + v_i + w_ai + f_ak + g_as + h_aks + e_aksi

(image difficulty v shared by all architectures, an architecture-by-image effect w, a fold effect f shared by the
seeds of a fold, a seed effect g shared by the folds of a seed, a model effect h and a residual e), runs
``bench.stats.verdict_table`` on it, and prints for R in {2, 5, 6, 15} trained models per architecture:

- under the null (all mu equal): the family-wise rate of any better/worse claim (and of any row left out of
  the best set), with its Monte Carlo standard error;
- power: the share of runs that call the best better than every other, at true leads of 0.01 and 0.02;
- coverage of the rank intervals (every architecture's true rank inside its interval, simultaneously);
- calibration of P(best): claims binned, claimed against observed frequency of being the true best, over
  runs whose true means are drawn at random (spread ``--spread``).

Defaults are the components measured on the quick profile with 5 seeds (README, "The verdict"); pass your own.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import stats  # noqa: E402

#: (folds, seeds) giving R trained models per architecture
DESIGNS = {2: (2, 1), 4: (2, 2), 5: (5, 1), 6: (2, 3), 10: (2, 5), 15: (5, 3)}
N_ARCHS = 6


def simulate(rng: np.random.Generator, mu: np.ndarray, folds: int, seeds: int, args: argparse.Namespace,
             ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, truth_empty) of one run: scores (archs, folds, seeds, images)."""
    a, i = mu.size, args.images
    truth_empty = rng.random(i) < args.empty_share
    shape = (a, folds, seeds, i)
    y = (mu[:, None, None, None] + rng.normal(0, args.image_sd, i)[None, None, None, :]
         + rng.normal(0, args.arch_image_sd, (a, 1, 1, i))
         + rng.normal(0, args.fold_sd, (a, folds, 1, 1)) + rng.normal(0, args.seed_sd, (a, 1, seeds, 1))
         + rng.normal(0, args.model_sd, (a, folds, seeds, 1)) + rng.normal(0, args.residual_sd, shape))
    return y, truth_empty


def run_verdict(y: np.ndarray, truth_empty: np.ndarray) -> "stats.pd.DataFrame":
    archs = [f"a{k}" for k in range(y.shape[0])]
    # every simulated model learned: predicted-empty flags that never trip the collapse rule
    return stats.verdict_table(y, archs, truth_empty=truth_empty, pred_empty=np.zeros(y.shape, bool),
                               n_draws=4000)


def null_and_power(r: int, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, float]:
    folds, seeds = DESIGNS[r]
    out: dict[str, float] = {}
    base = np.full(N_ARCHS, args.level)
    false_any, excluded, cover = 0, 0, 0
    for _ in range(args.runs):
        table = run_verdict(*simulate(rng, base, folds, seeds, args))
        pairs = table.attrs["pairs"]
        false_any += bool(len(pairs) and (pairs["verdict"] == "better").any())
        excluded += bool((~table["in_best_set"]).any() & (table["n_models"] >= stats.MIN_REPLICATES).all())
    out["fwer"] = false_any / args.runs
    out["fwer_se"] = math.sqrt(out["fwer"] * (1 - out["fwer"]) / args.runs) if args.runs else math.nan
    out["excluded"] = excluded / args.runs
    for lead in (0.01, 0.02):
        mu = base.copy()
        mu[0] += lead
        mu[1:] -= np.linspace(0, 0.03, N_ARCHS - 1)  # distinct true ranks below the best
        hits = 0
        for _ in range(args.runs):
            table = run_verdict(*simulate(rng, mu, folds, seeds, args))
            hits += bool(table.at[0, "arch"] == "a0" and table.at[0, "verdict"] == stats.BEST)
            truth = {f"a{k}": rank for rank, k in enumerate(np.argsort(-mu), start=1)}
            ok = table["rank_lo"].notna().all() and all(lo <= truth[a] <= hi for a, lo, hi in
                                                        zip(table["arch"], table["rank_lo"], table["rank_hi"]))
            cover += bool(ok)
        out[f"power_{lead}"] = hits / args.runs
    out["coverage"] = cover / (2 * args.runs)
    return out


def calibration(r: int, args: argparse.Namespace, rng: np.random.Generator) -> list[tuple[str, int, float, float]]:
    """Bins of P(best) claims >= 0.5: (bin, count, mean claimed, observed share that was the true best)."""
    folds, seeds = DESIGNS[r]
    claims, truths = [], []
    for _ in range(args.runs):
        mu = args.level + rng.normal(0, args.spread, N_ARCHS)
        table = run_verdict(*simulate(rng, mu, folds, seeds, args))
        if table["p_best"].isna().all():
            return []
        best = f"a{int(np.argmax(mu))}"
        for arch, p in zip(table["arch"], table["p_best"]):
            if p >= 0.5:
                claims.append(p)
                truths.append(arch == best)
    claims_a, truths_a = np.array(claims), np.array(truths)
    rows = []
    for lo, hi in ((0.5, 0.7), (0.7, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 1.01)):
        sel = (claims_a >= lo) & (claims_a < hi)
        if sel.any():
            rows.append((f"[{lo:.2f}, {min(hi, 1):.2f}{']' if hi > 1 else ')'}", int(sel.sum()),
                         float(claims_a[sel].mean()), float(truths_a[sel].mean())))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=400, help="simulated runs per cell of the table")
    p.add_argument("--replicates", default="2,4,5,6,10,15")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--level", type=float, default=0.62, help="the architectures' true mean score")
    p.add_argument("--empty-share", type=float, default=0.4)
    # measured on the quick profile, 5 seeds x 2 folds, 500 holdout images (README, "The verdict")
    p.add_argument("--image-sd", type=float, default=0.40)
    p.add_argument("--arch-image-sd", type=float, default=0.15)
    p.add_argument("--fold-sd", type=float, default=0.005)
    p.add_argument("--seed-sd", type=float, default=0.005)
    p.add_argument("--model-sd", type=float, default=0.02)
    p.add_argument("--residual-sd", type=float, default=0.20)
    p.add_argument("--spread", type=float, default=0.015, help="SD of the true means in the calibration runs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print("components (SD, TGS points): " + ", ".join(f"{k} {getattr(args, k)}" for k in (
        "image_sd", "arch_image_sd", "fold_sd", "seed_sd", "model_sd", "residual_sd")))
    print(f"{N_ARCHS} architectures, {args.images} images, {args.runs} runs per cell, alpha 0.05, rope {stats.ROPE}")
    print()
    print("| R (folds x seeds) | false claims under the null (MC se) | row left out of best set | "
          "power at +0.01 | power at +0.02 | rank-interval coverage | s |")
    print("|---|---|---|---|---|---|---|")
    reps = [int(r) for r in args.replicates.split(",")]
    for r in reps:
        t0 = time.perf_counter()
        out = null_and_power(r, args, rng)
        folds, seeds = DESIGNS[r]
        print(f"| {r} ({folds}x{seeds}) | {out['fwer']:.3f} ({out['fwer_se']:.3f}) | {out['excluded']:.3f} | "
              f"{out['power_0.01']:.3f} | {out['power_0.02']:.3f} | {out['coverage']:.3f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)
    print()
    print("P(best) calibration (claims >= 0.5; true means drawn with SD --spread):")
    print("| R | bin | claims | mean claimed | observed |")
    print("|---|---|---|---|---|")
    for r in reps:
        rows = calibration(r, args, rng)
        if not rows:
            print(f"| {r} | no P(best) is claimed with fewer than {stats.MIN_REPLICATES} models | | | |")
        for name, n, claimed, seen in rows:
            print(f"| {r} | {name} | {n} | {claimed:.3f} | {seen:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
