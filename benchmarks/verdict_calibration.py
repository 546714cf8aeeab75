"""Is the verdict calibrated? Simulate whole runs from variance components and count its claims.

Each simulated run draws per-image scores of 6 architectures, (folds x seeds) trained models each, on the same
images, from a crossed random-effects model with every source the real runs have::

    Y[a, k, s, i] = mu_a + v_i + w_ai + f_ak + g_as + h_aks + e_aksi

(image difficulty v shared by all architectures, an architecture-by-image effect w, a fold effect f shared by the
seeds of a fold, a seed effect g shared by the folds of a seed, a model effect h and a residual e), runs
``bench.stats.verdict_table`` on it, and prints for R in {2, 5, 6, 15} trained models per architecture:

- under the null (all mu equal): the family-wise rate of any better/worse claim (and of any row left out of
  the best set), with its Monte Carlo standard error;
- power at a true best 0.01 and 0.02 ahead of five equal others: the share of its comparisons called "better",
  and the share of runs that call it best alone;
- coverage of the rank intervals (every architecture's interval true, simultaneously), null and leads together;
- calibration of P(best): claims binned, claimed against observed frequency of being the true best, over
  runs whose true means are drawn at random (spread ``--spread``).

Defaults are components measured on a real run (see the option defaults); ``--from-run RUN`` measures a run of yours.
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


def _covered(table: "stats.pd.DataFrame", mu: np.ndarray) -> bool:
    """Every rank interval true at once: at least rank_lo - 1 architectures truly better, at least n - rank_hi
    truly worse (with ties in the truth, tied architectures are neither)."""
    true = {f"a{k}": m for k, m in enumerate(mu)}
    n = len(mu)
    for arch, lo, hi in zip(table["arch"], table["rank_lo"], table["rank_hi"]):
        better = sum(m > true[arch] for m in true.values())
        worse = sum(m < true[arch] for m in true.values())
        if lo - 1 > better or n - hi > worse:
            return False
    return True


def null_and_power(r: int, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, float]:
    """Under the null: any false better/worse claim, any row left out of the best set, rank coverage. With a true
    best ahead of five equal others by 0.01 and 0.02: the share of its five comparisons called "better", the share
    of runs calling it best alone, and rank coverage. NaN where the design makes no claim."""
    folds, seeds = DESIGNS[r]
    base = np.full(N_ARCHS, args.level)
    tallies: dict[str, list[float]] = {"fwer": [], "excluded": [], "coverage": []}
    for _ in range(args.runs):
        table = run_verdict(*simulate(rng, base, folds, seeds, args))
        if table["p_best"].isna().all():
            return {"claims": 0.0}
        pairs = table.attrs["pairs"]
        tallies["fwer"].append(float((pairs["verdict"] == "better").any()))
        tallies["excluded"].append(float((~table["in_best_set"] & table["p_best"].notna()).any()))
        tallies["coverage"].append(float(_covered(table, base)))
    for lead in (0.01, 0.02):
        mu = base.copy()
        mu[0] += lead
        called, alone = [], []
        for _ in range(args.runs):
            table = run_verdict(*simulate(rng, mu, folds, seeds, args))
            pairs = table.attrs["pairs"]
            called.append(float(((pairs["arch"] == "a0") & (pairs["verdict"] == "better")).sum() / (N_ARCHS - 1)))
            alone.append(float(table.at[0, "arch"] == "a0" and table.at[0, "verdict"] == stats.BEST))
            tallies["coverage"].append(float(_covered(table, mu)))
        tallies[f"power_{lead}"] = called
        tallies[f"alone_{lead}"] = alone
    out = {k: float(np.mean(v)) for k, v in tallies.items()}
    out["fwer_se"] = math.sqrt(out["fwer"] * (1 - out["fwer"]) / args.runs)
    out["claims"] = 1.0
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


def measured(run_dir: Path) -> dict[str, float]:
    """The simulator's components measured on a finished run's holdout predictions (per_image.csv, split holdout):
    per architecture from ``bench.stats.Crossed``, averaged over architectures (SDs via their variances); the
    architecture-by-image SD from the image component of every pairwise difference (halved variance)."""
    import pandas as pd

    per_image = pd.read_csv(run_dir / "per_image.csv", dtype={"id": str})
    held = per_image[per_image["split"] == "holdout"]
    archs = sorted(held["arch"].unique())
    arrays = []
    for arch in archs:
        rows = held[held["arch"] == arch]
        folds, seeds, ids = (sorted(rows[c].unique()) for c in ("fold", "seed", "id"))
        table = rows.set_index(["fold", "seed", "id"])["score"]
        arrays.append(np.array([[[table[(f, s, i)] for i in ids] for s in seeds] for f in folds]))
    x = np.stack(arrays)
    ms = stats.Crossed.of(x)
    var = {k: [] for k in ("image", "model", "fold", "seed", "residual", "arch_image")}
    for a in range(len(archs)):
        c = np.eye(len(archs))[a]
        image, model, fold, seed = ms.components(c)
        var["image"].append(image ** 2)
        var["model"].append(max(model ** 2 - fold ** 2 - seed ** 2, 0.0))
        var["fold"].append(fold ** 2)
        var["seed"].append(seed ** 2)
        var["residual"].append(float(c @ ms.res @ c))
        for b in range(a + 1, len(archs)):
            var["arch_image"].append(ms.components(c - np.eye(len(archs))[b])[0] ** 2 / 2)
    arch_image = float(np.mean(var["arch_image"]))
    return {"image_sd": math.sqrt(max(float(np.mean(var["image"])) - arch_image, 0.0)),
            "arch_image_sd": math.sqrt(arch_image), "fold_sd": math.sqrt(float(np.mean(var["fold"]))),
            "seed_sd": math.sqrt(float(np.mean(var["seed"]))), "model_sd": math.sqrt(float(np.mean(var["model"]))),
            "residual_sd": math.sqrt(float(np.mean(var["residual"]))), "images": x.shape[-1],
            "empty_share": float(held.drop_duplicates("id")["empty_truth"].mean()),
            "level": float(held["score"].mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=400, help="simulated runs per cell of the table")
    p.add_argument("--replicates", default="2,4,5,6,10,15")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--level", type=float, default=0.62, help="the architectures' true mean score")
    p.add_argument("--empty-share", type=float, default=0.4)
    # measured with --from-run on a reduced quick-profile run (240 development images, 20 epochs, 2 folds x 2 seeds,
    # unet, linknet, pspnet and deeplabv3, 200 holdout images): the fold and seed effects are real
    p.add_argument("--image-sd", type=float, default=0.413)
    p.add_argument("--arch-image-sd", type=float, default=0.135)
    p.add_argument("--fold-sd", type=float, default=0.027)
    p.add_argument("--seed-sd", type=float, default=0.034)
    p.add_argument("--model-sd", type=float, default=0.005, help="fold x seed interaction (measured 0.000)")
    p.add_argument("--residual-sd", type=float, default=0.181)
    p.add_argument("--spread", type=float, default=0.03, help="SD of the true means in the calibration runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-run", type=Path, default=None,
                   help="measure the components on this finished run's holdout predictions instead")
    args = p.parse_args(argv)
    if args.from_run is not None:
        for key, value in measured(args.from_run).items():
            setattr(args, key, value)
        print(f"components measured on {args.from_run} (per_image.csv, holdout predictions of every model)")
    rng = np.random.default_rng(args.seed)
    print("components (SD, TGS points): " + ", ".join(f"{k} {getattr(args, k):.4f}" for k in (
        "image_sd", "arch_image_sd", "fold_sd", "seed_sd", "model_sd", "residual_sd")))
    print(f"{N_ARCHS} architectures, {args.images} images, {args.runs} runs per cell, alpha 0.05, rope {stats.ROPE}")
    print()
    print("| R (folds x seeds) | any false claim, null (MC se) | a row left out of the best set, null | "
          "power +0.01 (best vs each) | power +0.02 (best vs each) | best alone at +0.02 | "
          "rank intervals all true | s |")
    print("|---|---|---|---|---|---|---|---|")
    reps = [int(r) for r in args.replicates.split(",")]
    for r in reps:
        t0 = time.perf_counter()
        out = null_and_power(r, args, rng)
        folds, seeds = DESIGNS[r]
        if not out["claims"]:
            print(f"| {r} ({folds}x{seeds}) | no claims: too few models or one seed | | | | | | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
            continue
        print(f"| {r} ({folds}x{seeds}) | {out['fwer']:.3f} ({out['fwer_se']:.3f}) | {out['excluded']:.3f} | "
              f"{out['power_0.01']:.3f} | {out['power_0.02']:.3f} | {out['alone_0.02']:.3f} | "
              f"{out['coverage']:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)
    print()
    print("P(best) calibration (claims >= 0.5; true means drawn with SD --spread):")
    print("| R | bin | claims | mean claimed | observed |")
    print("|---|---|---|---|---|")
    for r in reps:
        rows = calibration(r, args, rng)
        if not rows:
            print(f"| {r} | no P(best): fewer than {stats.MIN_REPLICATES} models or one seed | | | |")
        for name, n, claimed, seen in rows:
            print(f"| {r} | {name} | {n} | {claimed:.3f} | {seen:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
