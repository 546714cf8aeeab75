"""Does a run's verdict survive more seeds? Re-judge a finished run on its first k seeds and compare.

For a run with several seeds (e.g. ``salt-bench run --config configs/quick.yaml --set 'protocol.seeds=[0,1,2,3,4]'``)
this prints, from its ``per_image.csv`` (every trained model's holdout prediction) and ``bench.stats.verdict_table``:

- per architecture, the variance components of its score (image, model, fold and seed SD) on all seeds;
- the leaderboard on the first k seeds for each k (2 folds x k seeds = 2k trained models per architecture);
- every pairwise claim of a smaller k that the run on all seeds contradicts: "better" where all seeds find the
  opposite sign or equivalence, "equivalent" where all seeds find one better.

Usage: ``python benchmarks/seed_subsets.py RUN_DIR [--seeds 2,3,5]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import stats  # noqa: E402


def load(run_dir: Path) -> tuple[list[str], list[int], np.ndarray, np.ndarray, np.ndarray]:
    """(archs, seeds, scores, pred_empty, truth_empty) of a run's holdout predictions, (archs, folds, seeds, images)."""
    per_image = pd.read_csv(run_dir / "per_image.csv", dtype={"id": str})
    held = per_image[per_image["split"] == "holdout"]
    if held.empty:
        raise SystemExit(f"{run_dir}: no per-model holdout predictions in per_image.csv")
    archs = sorted(held["arch"].unique())
    folds, seeds, ids = (sorted(held[c].unique()) for c in ("fold", "seed", "id"))
    index = pd.MultiIndex.from_product([archs, folds, seeds, ids], names=["arch", "fold", "seed", "id"])
    table = held.set_index(["arch", "fold", "seed", "id"]).reindex(index)
    shape = (len(archs), len(folds), len(seeds), len(ids))
    scores = table["score"].to_numpy(float).reshape(shape)
    if np.isnan(scores).any():
        complete = ~np.isnan(scores).any(axis=(0, 1, 3))
        seeds = [s for s, ok in zip(seeds, complete) if ok]
        print(f"using the seeds every architecture finished: {seeds}")
        keep = np.flatnonzero(complete)
        scores = scores[:, :, keep]
        empty = table["empty_pred"].to_numpy(object).reshape(shape)[:, :, keep].astype(bool)
    else:
        empty = table["empty_pred"].to_numpy(object).reshape(shape).astype(bool)
    truth = held.drop_duplicates("id").set_index("id").loc[ids, "empty_truth"].to_numpy(bool)
    return archs, [int(s) for s in seeds], scores, empty, truth


def _markdown(frame: pd.DataFrame) -> str:
    """A markdown table (numbers to 4 places, missing as "-") without an extra dependency."""
    cells = [[("-" if v != v else f"{v:.4f}") if isinstance(v, float) else str(v) for v in row]
             for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--seeds", default="2,3", help="numbers of first seeds to re-judge the run on")
    args = p.parse_args(argv)
    archs, seeds, scores, empty, truth = load(args.run_dir)
    full = stats.verdict_table(scores, archs, truth_empty=truth, pred_empty=empty)
    print(f"{args.run_dir}: {len(archs)} architectures, {scores.shape[1]} folds x {len(seeds)} seeds, "
          f"{scores.shape[3]} holdout images")
    print("\nvariance components on all seeds (SD, TGS points):")
    print(_markdown(full[["arch", "score", "n_models", "collapsed", "image_sd", "replicate_sd", "fold_sd",
                          "seed_sd"]]))
    columns = ["arch", "score", "ci_lo", "ci_hi", "p_best", "rank_lo", "rank_hi", "verdict"]
    tables = {}
    for k in [int(k) for k in args.seeds.split(",") if int(k) < len(seeds)] + [len(seeds)]:
        table = full if k == len(seeds) else stats.verdict_table(scores[:, :, :k], archs, truth_empty=truth,
                                                                  pred_empty=empty[:, :, :k])
        tables[k] = table
        print(f"\nfirst {k} seed(s): {table.attrs['n_replicates']} trained models per architecture")
        print(_markdown(table[columns]))
    truth_pairs = {(r.arch, r.other): r.verdict for r in full.attrs["pairs"].itertuples()}
    print("\nclaims of fewer seeds contradicted by all seeds:")
    found = 0
    for k, table in tables.items():
        if k == len(seeds):
            continue
        for r in table.attrs["pairs"].itertuples():
            if r.verdict == "unresolved":
                continue
            same, flipped = truth_pairs.get((r.arch, r.other)), truth_pairs.get((r.other, r.arch))
            if (r.verdict == "better" and (flipped == "better" or same == "equivalent" or flipped == "equivalent")) or (
                    r.verdict == "equivalent" and "better" in (same, flipped)):
                found += 1
                print(f"- first {k} seeds: {r.arch} {r.verdict} than/to {r.other}; all seeds: "
                      f"{same or flipped} ({'same order' if same else 'reversed'})")
    if not found:
        print("none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
