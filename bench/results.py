"""Turn a run directory's cells into ``leaderboard.csv``, ``per_image.csv`` and ``gallery.npz``.

Reads only the run directory (``data.npz`` holds the train ids, images, masks and folds), so a
leaderboard can be rebuilt at any time, also from a partial run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import atomic
from bench.data.folds import N_CLASSES, coverage_class
from bench.metrics import all_empty_scores, best_threshold, binarise, dice, iou, tgs_precision
from bench.rundir import OOF, Cell, RunDir


def _pooled(run: RunDir, arch: str, seed: int, cells: pd.DataFrame, index: dict[str, int]) -> dict[str, np.ndarray]:
    """Pooled out-of-fold uint8 probabilities of one (arch, seed) over its finished folds."""
    parts: dict[str, list[np.ndarray]] = {"rows": [], "probs": [], "probs_no_tta": []}
    for fold in sorted(cells["fold"]):
        with np.load(run.cell_dir(Cell(arch, int(fold), int(seed))) / OOF, allow_pickle=False) as z:
            parts["rows"].append(np.array([index[i] for i in z["ids"]]))
            parts["probs"].append(z["probs"])
            parts["probs_no_tta"].append(z["probs_no_tta"])
    return {k: np.concatenate(v) for k, v in parts.items()}


def aggregate(run_dir: Path | RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leaderboard (one row per architecture, ranked) and per-image scores; both written atomically."""
    run = RunDir(run_dir)
    data = run.load_data()
    index = {str(i): k for k, i in enumerate(data["ids"])}
    classes = coverage_class(data["masks"])
    cells = run.metrics_table()
    board_rows: list[dict[str, Any]] = []
    image_rows: list[pd.DataFrame] = []
    gallery_probs: dict[str, np.ndarray] = {}
    for (arch, seed), group in cells.groupby(["arch", "seed"], sort=True):
        pooled = _pooled(run, arch, seed, group, index)
        rows = pooled["rows"]
        truth, folds = data["masks"][rows], data["folds"][rows]
        threshold, _ = best_threshold(pooled["probs"].astype(np.float32) / 255, truth)
        threshold_plain, _ = best_threshold(pooled["probs_no_tta"].astype(np.float32) / 255, truth)
        pred = binarise(pooled["probs"], threshold)
        scores = tgs_precision(truth, pred)
        per_fold = pd.Series(scores).groupby(folds).mean()
        empty_truth, empty_pred = ~truth.any(axis=(1, 2)), ~pred.any(axis=(1, 2))
        cls = classes[rows]
        row = {
            "arch": arch, "seed": seed, "encoder": group["encoder"].iloc[0],
            "params": int(group["params"].iloc[0]), "gmacs": group["macs"].iloc[0] / 1e9,
            "train_images_per_s": group["train_images_per_s"].mean(), "infer_images_per_s": group["infer_images_per_s"].mean(),
            "peak_mem_mb": group["peak_mem_mb"].max() if group["peak_mem_mb"].notna().any() else np.nan,
            "threshold": threshold, "score": scores.mean(),
            "score_no_tta": tgs_precision(truth, binarise(pooled["probs_no_tta"], threshold_plain)).mean(),
            "fold_mean": per_fold.mean(), "fold_std": per_fold.std(ddof=1) if len(per_fold) > 1 else np.nan,
            "iou": iou(truth, pred).mean(), "dice": dice(truth, pred).mean(),
            "empty_acc": (empty_truth == empty_pred).mean(),
            "empty_tp": int((empty_truth & empty_pred).sum()), "empty_fn": int((empty_truth & ~empty_pred).sum()),
            "empty_fp": int((~empty_truth & empty_pred).sum()), "empty_tn": int((~empty_truth & ~empty_pred).sum()),
            "epochs_to_best": (group["best_epoch"] + 1).mean(), "folds_done": len(group),
            "diverged": int((group["status"] != "ok").sum()), "n_images": len(rows),
        }
        for c in range(N_CLASSES):
            row[f"cov_{c}"] = scores[cls == c].mean() if (cls == c).any() else np.nan
        board_rows.append(row)
        image_rows.append(pd.DataFrame({
            "id": data["ids"][rows], "fold": folds, "arch": arch, "seed": seed, "score": scores,
            "iou": iou(truth, pred), "coverage_class": cls, "empty_truth": empty_truth, "empty_pred": empty_pred,
        }))
        if seed == group["seed"].min():
            full = np.zeros((len(data["ids"]), *data["masks"].shape[1:]), np.uint8)
            full[rows] = pooled["probs"]
            gallery_probs[arch] = full
    if not board_rows:
        return pd.DataFrame(), pd.DataFrame()
    per_seed = pd.DataFrame(board_rows)
    board = per_seed.groupby("arch", sort=False).agg(
        {c: ("mean" if pd.api.types.is_numeric_dtype(per_seed[c]) else "first")
         for c in per_seed.columns if c not in ("arch", "seed")}
    )
    board["seeds"] = per_seed.groupby("arch")["seed"].nunique()
    board = board.sort_values("score", ascending=False).reset_index()
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    per_image = pd.concat(image_rows, ignore_index=True)
    atomic.write_text(run.leaderboard_file, board.to_csv(index=False))
    atomic.write_text(run.per_image_file, per_image.to_csv(index=False))
    _write_gallery(run, data, board, per_image, gallery_probs)
    return board, per_image


def _write_gallery(run: RunDir, data: dict, board: pd.DataFrame, per_image: pd.DataFrame,
                   probs: dict[str, np.ndarray], n_each: int = 2, n_disagree: int = 4) -> None:
    """The same validation images for every architecture: best, median and worst of the winner, then
    the images where architectures disagree most (largest spread of per-image score)."""
    seed0 = per_image[per_image["seed"] == per_image["seed"].min()]
    table = seed0.pivot_table(index="id", columns="arch", values="score")
    table = table.dropna()
    if table.empty:
        return
    winner = board["arch"].iloc[0]
    order = table[winner].sort_values(kind="stable")
    mid = len(order) // 2
    chosen = list(dict.fromkeys(
        list(order.index[::-1][:n_each]) + list(order.index[mid : mid + n_each]) + list(order.index[:n_each])
    ))
    labels = ["best"] * n_each + ["median"] * n_each + ["worst"] * n_each
    spread = (table.max(axis=1) - table.min(axis=1)).drop(index=chosen, errors="ignore")
    spread = spread[spread > 0].sort_values(ascending=False, kind="stable")
    disagree = list(spread.index[:n_disagree])
    ids = chosen + disagree
    labels = labels[: len(chosen)] + ["disagree"] * len(disagree)
    index = {str(i): k for k, i in enumerate(data["ids"])}
    rows = np.array([index[i] for i in ids])
    arrays = {f"probs_{a}": probs[a][rows] for a in board["arch"] if a in probs}
    atomic.write_npz(run.gallery_file, ids=np.array(ids), labels=np.array(labels), images=data["images"][rows],
                  masks=data["masks"][rows], archs=np.array(list(arrays and [a[6:] for a in arrays])), **arrays)


def all_empty_baseline(run_dir: Path | RunDir) -> float:
    """The TGS score of predicting every mask empty: the floor any learned model must clear."""
    return float(all_empty_scores(RunDir(run_dir).load_data()["masks"]).mean())


def format_leaderboard(board: pd.DataFrame, baseline: float | None = None) -> str:
    cols = ["rank", "arch", "encoder", "score", "score_no_tta", "fold_mean", "fold_std", "iou", "empty_acc",
            "threshold", "params", "gmacs", "train_images_per_s", "folds_done"]
    view = board[[c for c in cols if c in board]].copy()
    view["params"] = (view["params"] / 1e6).map("{:.2f}M".format)
    text = view.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    if baseline is not None:
        text += f"\nall-empty baseline (predict no salt anywhere): {baseline:.4f}"
    return text
