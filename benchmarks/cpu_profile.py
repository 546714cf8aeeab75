"""CPU quick profile across generators: does every architecture clear the all-empty baseline on every dataset variant?

For each candidate recipe (``--set`` overrides layered on configs/quick.yaml) and each dataset variant
(synthetic generator seed x style, 600 train images), the variant is written to a temporary TGS folder
and the real ``salt-bench run`` trains on it in a subprocess, exactly as ``make bench`` would. The table
gives the all-empty baseline (the score of predicting no salt anywhere: the fraction of empty masks),
each architecture's margin (ranking score - baseline; the goal is >= 0.05) and its training images/s.

    python benchmarks/cpu_profile.py [--recipes quick,...] [--variants 1:default,1:hard,...] [--archs unet,...]
                                     [--set KEY=VALUE ...] [--work DIR] [--csv FILE]

A full run is about 5 minutes per recipe and variant on 2 idle cores; ``--set protocol.epochs=1`` is a smoke test,
``--set runtime.threads=1`` keeps it to one core, ``--set "protocol.seeds=[1]"`` trains on another seed (a margin near
the goal moves with the training seed: screen a recipe on several). The subprocess runs this checkout's code
(``python -m bench.cli``).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.data import synthetic, tgs
from bench.errors import BenchError
from bench.rundir import RunDir
from bench.rundir.tables import Aggregate

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick.yaml"
N_TRAIN = 600
MARGIN_GOAL = 0.05
#: Candidate recipes: overrides layered on configs/quick.yaml. Add a line to profile another one.
RECIPES: dict[str, list[str]] = {
    "quick": [],
    "ep36-ve6": ["protocol.epochs=36", "protocol.loss.switch_epoch=36", "runtime.validate_every=6"],
    "ep40-lr5e-3": ["protocol.optimizer.lr=5.0e-3"],
    "ep44-ve22": ["protocol.epochs=44", "protocol.loss.switch_epoch=44", "runtime.validate_every=22"],
    "lr1e-2": ["protocol.optimizer.lr=1.0e-2"],
    "lr1e-3": ["protocol.optimizer.lr=1.0e-3"],
    "lr5e-4": ["protocol.optimizer.lr=5.0e-4"],
    "bs4": ["protocol.batch_size=4"],
    "noaug": ["protocol.augment.shift_scale=0", "protocol.augment.color=0"],
    "dice1": ["protocol.loss.first.dice=1.0"],
    "bf16-30ep": ["protocol.epochs=30", "protocol.loss.switch_epoch=30"],
    "fp32-30ep": ["protocol.epochs=30", "protocol.loss.switch_epoch=30", "runtime.precision=float32"],
    # four trained models per architecture (2 folds x 2 seeds) at about the compute of two 40-epoch ones
    "f2s2-ep20-lr5e-3": ["protocol.seeds=[0,1]", "protocol.epochs=20", "protocol.loss.switch_epoch=20",
                         "protocol.optimizer.lr=5.0e-3"],
    # the profile's 1200 steps per model at batch 4: about 0.6x of its compute per model
    "f2s2-bs4-ep20": ["protocol.seeds=[0,1]", "protocol.batch_size=4", "protocol.epochs=20",
                      "protocol.loss.switch_epoch=20"],
}
DEFAULT_VARIANTS = "1:default,2:default,3:default,1:hard,2:hard,3:hard"


@dataclass(frozen=True)
class Variant:
    seed: int
    style: str

    @property
    def name(self) -> str:
        return f"{self.seed}:{self.style}"


def parse_variants(text: str) -> list[Variant]:
    """``seed:style,...`` into variants; a bare seed means the default style."""
    out = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        seed, _, style = item.partition(":")
        style = style or "default"
        if not seed.lstrip("-").isdigit() or style not in synthetic.STYLES:
            raise BenchError(f"--variants: {item!r} is not SEED:STYLE with STYLE one of {', '.join(synthetic.STYLES)}")
        out.append(Variant(int(seed), style))
    if not out:
        raise BenchError("--variants: no variant given")
    return out


def parse_recipes(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        raise BenchError(f"--recipes: {', '.join(unknown) or 'none given'}: not a recipe (known: {', '.join(RECIPES)})")
    return names


def write_variant(root: Path, variant: Variant, n_train: int = N_TRAIN) -> float:
    """Write the variant's train images (no test images) and return its all-empty baseline."""
    synthetic.write_dataset(root, n_train=n_train, n_test=0, seed=variant.seed, style=variant.style)
    return float((~tgs.load(root).masks.any(axis=(1, 2))).mean())


def run_one(data_dir: Path, run_dir: Path, overrides: list[str], archs: list[str] | None, log: Path) -> float:
    """``salt-bench run`` on one variant in a subprocess of this interpreter and checkout; returns its wall time (s)."""
    cmd = [sys.executable, "-m", "bench.cli", "run", "--config", str(QUICK), "--set", f"data.source={data_dir}",
           "--no-report", "--out", str(run_dir)]
    for o in overrides:
        cmd += ["--set", o]
    if archs:
        cmd += ["--archs", ",".join(archs)]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print("\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
        raise BenchError(f"{log}: salt-bench run exited with {done.returncode} (its last lines are above)")
    return wall


def board_rows(run_dir: Path, recipe: str, variant: Variant, wall_s: float) -> list[dict]:
    """One row per architecture from the run's leaderboard.csv, its margin taken over the all-empty score of the
    images its ranking score is computed on (the holdout when the run has one, else the development set)."""
    board = pd.read_csv(run_dir / "leaderboard.csv")
    summary = Aggregate.read(RunDir(run_dir).aggregate_file)
    baseline = summary.baseline
    rows = []
    for _, r in board.iterrows():
        rows.append({"recipe": recipe, "variant": variant.name, "arch": r["arch"], "baseline": baseline,
                     "score": r["score"], "margin": r["score"] - baseline,
                     "oof_margin": r["oof_score"] - summary.all_empty_oof,
                     "learned": bool(r["learned"]), "train_images_per_s": r["train_images_per_s"], "wall_s": wall_s})
    return rows


def format_table(long: pd.DataFrame) -> str:
    """Margins and img/s side by side, one line per recipe and variant, architectures as columns."""
    index = ["recipe", "variant"]
    first = long.drop_duplicates(index).set_index(index)
    margins = long.pivot_table(index=index, columns="arch", values="margin", sort=False)
    speed = long.pivot_table(index=index, columns="arch", values="train_images_per_s", sort=False)
    four, whole = "{:.4f}".format, "{:.0f}".format
    table = pd.concat({"baseline": first[["baseline"]].map(four), "margin (score - baseline)": margins.map(four),
                       "train img/s": speed.map(whole)}, axis=1)
    table[("min margin", "")] = margins.min(axis=1).map(four)
    table[("wall s", "")] = first["wall_s"].map(whole)
    lines = [table.to_string()]
    oof = long.pivot_table(index=index, columns="arch", values="oof_margin", sort=False)
    lines += ["", "cross-fitted OOF margin (oof_score - all-empty score of the development set):", oof.map(four).to_string()]
    missed = long.loc[~long["learned"], ["recipe", "variant", "arch"]]
    lines += ["", "not learned: " + (", ".join(" ".join(map(str, r)) for r in missed.to_numpy()) or "none")]
    below = int(margins.lt(MARGIN_GOAL).sum().sum())
    lines += ["", f"{below} of {margins.size} (recipe, variant, architecture) margins below the goal of {MARGIN_GOAL}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="quick", metavar="NAME,...", help=f"known: {', '.join(RECIPES)}")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, metavar="SEED:STYLE,...")
    ap.add_argument("--n-train", type=int, default=N_TRAIN, help="images per variant (fewer only for a smoke test)")
    ap.add_argument("--archs", type=lambda s: [a.strip() for a in s.split(",") if a.strip()], default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="extra override for every run, after the recipe's (e.g. protocol.epochs=1 for a smoke test)")
    ap.add_argument("--work", type=Path, default=None, help="keep datasets, run directories and logs here (default: a "
                                                             "temporary folder, removed at the end)")
    ap.add_argument("--csv", type=Path, default=None, help="also write the long table (one row per architecture) here")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cpu-profile-"))
    rows: list[dict] = []
    try:
        recipes, variants = parse_recipes(args.recipes), parse_variants(args.variants)
        for variant in variants:
            data_dir = work / "data" / f"s{variant.seed}-{variant.style}"
            if data_dir.exists():
                shutil.rmtree(data_dir)
            write_variant(data_dir, variant, args.n_train)
            for recipe in recipes:
                run_dir = work / "runs" / f"{recipe}-s{variant.seed}-{variant.style}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                log = work / f"{recipe}-s{variant.seed}-{variant.style}.log"
                print(f"{recipe} on {variant.name}: training, log {log}", flush=True)
                wall = run_one(data_dir, run_dir, RECIPES[recipe] + args.overrides, args.archs, log)
                rows += board_rows(run_dir, recipe, variant, wall)
                print(f"  done in {wall:.0f} s", flush=True)
    except BenchError as exc:
        print(f"cpu_profile: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    long = pd.DataFrame(rows)
    if args.csv:
        long.to_csv(args.csv, index=False)
    print()
    print(format_table(long))
    return 0


if __name__ == "__main__":
    sys.exit(main())
