"""``salt-bench compare RUN_A RUN_B``: how much one protocol change moves each architecture, with how sure.

Two runs on the same images and folds (the same development set, fold assignment and holdout) are paired per
architecture by trained model (fold, seed) and image: B - A is estimated and tested exactly as the leaderboard
compares architectures (``bench.stats.difference``: training noise and images both counted; no claim with fewer
than 3 trained models or one seed), Holm-adjusted across the architectures. Every difference between the runs'
protocols and between an architecture's model options or recipe is listed, so the table says what it measures.

``rank_a`` and ``rank_b`` are the architecture's ranks in each run's own leaderboard (over all of its models), the
scores those of the paired models. Refused, in one line: one run directory given twice (however its path is
spelled), and runs on other images. The table goes to ``RUN_B/compare/<RUN_A>.csv`` (or ``--out``), where RUN_B's report shows it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import results, stats
from bench.errors import BenchError
from bench.rundir import ProtocolRecord, RunDir
from bench.rundir.tables import COMPARISON

COLUMNS = ["arch", "split", "n_images", "n_models", "head_a", "head_b", "epochs_a", "epochs_b", "rank_a", "rank_b",
           "score_a", "score_b", "diff", "se", "df", "ci_lo", "ci_hi", "p", "p_holm", "verdict", "differences"]
_MISSING = object()  # a key one record has and the other lacks


def differences(a: Any, b: Any, key: str = "") -> list[str]:
    """``key: A -> B`` for every dotted key at which two records differ (a missing key differs from any value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k, _MISSING), b.get(k, _MISSING), f"{key}.{k}" if key else str(k))]
    return [] if a == b else [f"{key}: {_describe(a)} -> {_describe(b)}"]


def _describe(value: Any) -> str:
    return "absent" if value is _MISSING else repr(value)


def _head_label(record: ProtocolRecord) -> str:
    head = record.shared.get("empty_head")
    return "off" if not head else " ".join(f"{k}={v:g}" for k, v in sorted(head.items()))


def check_images(run_a: RunDir, run_b: RunDir) -> None:
    """The same development images (ids, masks, folds) and the same holdout in both runs."""
    pairs = [(run_a.load_data(), run_b.load_data(), ("ids", "masks", "folds"), "development")]
    if run_a.holdout_data_file.is_file() or run_b.holdout_data_file.is_file():
        pairs.append((run_a.load_holdout() if run_a.holdout_data_file.is_file() else None,
                      run_b.load_holdout() if run_b.holdout_data_file.is_file() else None, ("ids", "masks"), "holdout"))
    for a, b, keys, what in pairs:
        for key in keys:
            if a is None or b is None or not np.array_equal(getattr(a, key), getattr(b, key)):
                raise BenchError(f"{run_a} and {run_b} hold different {what} images ({key} differ): "
                                 "a paired comparison needs the same images and folds")


def _settings(run: RunDir) -> dict[str, dict[str, Any]]:
    """Per architecture: its model options, recipe and epochs (derived per architecture under ``protocol.budget``)
    as its cells recorded them (cells written before epochs were recorded: the run's config's)."""
    cells = run.metrics_table()
    if cells.empty:
        return {}
    cfg = run.config()
    out = {}
    for arch, group in cells.groupby("arch"):
        row = group.iloc[0]
        epochs = row.get("epochs")
        if epochs is None or epochs != epochs:
            epochs = cfg.plan(str(arch)).protocol.epochs
        out[str(arch)] = {"model": dict(row["arch_kwargs"]), "train": row.get("arch_train") or {}, "epochs": int(epochs)}
    return out


def _model_scores(per_image: pd.DataFrame, arch: str, split: str) -> pd.Series:
    """Per (fold, seed, id): the score of one trained model (holdout) or of a seed's fold model (OOF)."""
    rows = per_image[(per_image["arch"] == arch) & (per_image["split"] == split)]
    return rows.set_index(["fold", "seed", "id"])["score"]


def _paired(a: pd.Series, b: pd.Series, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(folds, seeds, images) arrays of A and B on the models and images both have (NaN where not scored)."""
    common = a.index.intersection(b.index)
    if split == "holdout":  # every model scored every image: keep the models and images complete in both
        frame = pd.DataFrame({"a": a.loc[common], "b": b.loc[common]}).reset_index()
        models = frame.groupby(["fold", "seed"])["id"].nunique()
        n_ids = frame["id"].nunique()
        keep = models[models == n_ids].index
        frame = frame.set_index(["fold", "seed"]).loc[keep].reset_index()
    else:
        frame = pd.DataFrame({"a": a.loc[common], "b": b.loc[common]}).reset_index()
    folds, seeds, ids = (sorted(frame[c].unique()) for c in ("fold", "seed", "id"))
    shape = (len(folds), len(seeds), len(ids))
    out_a, out_b = np.full(shape, np.nan), np.full(shape, np.nan)
    fi = frame["fold"].map({f: k for k, f in enumerate(folds)}).to_numpy()
    si = frame["seed"].map({s: k for k, s in enumerate(seeds)}).to_numpy()
    ii = frame["id"].map({i: k for k, i in enumerate(ids)}).to_numpy()
    out_a[fi, si, ii], out_b[fi, si, ii] = frame["a"].to_numpy(), frame["b"].to_numpy()
    return out_a, out_b


def compare(run_a: Path | RunDir, run_b: Path | RunDir, out: Path | None = None) -> tuple[pd.DataFrame, Path]:
    """Pair B's per-model, per-image scores with A's per architecture, estimate and test B - A, write the table."""
    run_a, run_b = RunDir(run_a), RunDir(run_b)
    if run_a.path.resolve() == run_b.path.resolve():
        raise BenchError(f"{run_a} and {run_b} are the same run directory: compare two different runs")
    record_a, record_b = run_a.require_protocol(), run_b.require_protocol()
    check_images(run_a, run_b)
    settings_a, settings_b = _settings(run_a), _settings(run_b)
    archs = sorted(set(settings_a) & set(settings_b))
    if not archs:
        raise BenchError(f"{run_a} and {run_b} have no finished architecture in common")
    protocol_diff = differences(record_a.protocol, record_b.protocol)
    (board_a, per_a), (board_b, per_b) = results.current(run_a), results.current(run_b)
    rank_a, rank_b = (dict(zip(board["arch"], board["rank"])) for board in (board_a, board_b))
    rows = []
    for arch in archs:
        split = "holdout" if all(((p["arch"] == arch) & (p["split"] == "holdout")).any() for p in (per_a, per_b)) else "oof"
        a, b = _paired(_model_scores(per_a, arch, split), _model_scores(per_b, arch, split), split)
        if a.size == 0 or np.isnan(a).all():
            raise BenchError(f"{arch}: no {split} image scored by the same trained models in both {run_a} and {run_b}")
        try:
            d = stats.difference(b, a)
        except ValueError:
            raise BenchError(f"{arch}: the {split} predictions of {run_a} and {run_b} do not pair up by fold, seed "
                             "and image") from None
        own = [f"architectures.{arch}.{x}" for x in differences(settings_a[arch], settings_b[arch])]
        rows.append({"arch": arch, "split": split, "n_images": d.n_images, "n_models": d.n_models,
                     "head_a": _head_label(record_a), "head_b": _head_label(record_b),
                     "epochs_a": settings_a[arch]["epochs"], "epochs_b": settings_b[arch]["epochs"],
                     "rank_a": rank_a.get(arch), "rank_b": rank_b.get(arch),
                     "score_a": float(np.nanmean(a)), "score_b": float(np.nanmean(b)), "diff": d.diff, "se": d.se,
                     "df": d.df, "ci_lo": d.ci_lo, "ci_hi": d.ci_hi, "p": d.p,
                     "differences": "; ".join(protocol_diff + own) or "none"})
    table = pd.DataFrame(rows)
    table["p_holm"] = stats.holm(table["p"].to_numpy())
    table["verdict"] = [_verdict(r) for r in table.itertuples()]
    table = table[COLUMNS]
    path = Path(out) if out is not None else run_b.compare_file(run_a)
    COMPARISON.write(path, table)
    return table, path


def _verdict(row: Any, alpha: float = 0.05) -> str:
    if math.isnan(row.p):
        return stats.TOO_FEW.format(r=row.n_models)
    if row.p_holm < alpha:
        return "B better" if row.diff > 0 else "A better"
    return "unresolved"


def format_table(table: pd.DataFrame, run_a: Path, run_b: Path) -> str:
    """The console table, with what B - A means and what differs between the runs."""
    view = table.drop(columns=["head_a", "head_b", "differences"])
    text = view.to_string(index=False, float_format=lambda v: "n/a" if math.isnan(v) else f"{v:.4f}")
    return (f"B - A per architecture: A = {run_a}, B = {run_b}; paired by trained model and image, intervals count "
            "training noise and images, p Holm-adjusted across architectures\n"
            f"the runs differ in: {table['differences'].iloc[0]}\n" + text)
