"""Turn a run directory's cells into ``leaderboard.csv``, ``per_image.csv``, ``gallery.npz`` and, for a run with
``protocol.empty_head``, ``classifier.csv``.

Reads only the run directory (``data.npz`` holds the train ids, images, masks and folds), so a
leaderboard can be rebuilt at any time, also from a partial run.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import atomic, classifier, postprocess, stats
from bench.data.folds import N_CLASSES, coverage_class
from bench.errors import BenchError, one_line
from bench.identity import environment
from bench.metrics import all_empty_scores, best_threshold, binarise, dice, iou, tgs_precision
from bench.rundir import OOF, Cell, RunDir


def _pooled(run: RunDir, arch: str, seed: int, cells: pd.DataFrame, index: dict[str, int]) -> dict[str, np.ndarray]:
    """Pooled out-of-fold uint8 probabilities of one (arch, seed) over its finished folds, and the head's
    probabilities (``head``) when the cells have the head."""
    parts: dict[str, list[np.ndarray]] = {"rows": [], "probs": [], "probs_no_tta": [], "head": []}
    for fold in sorted(cells["fold"]):
        path = run.cell_dir(Cell(arch, int(fold), int(seed))) / OOF
        try:
            with np.load(path, allow_pickle=False) as z:
                parts["rows"].append(np.array([index[str(i)] for i in z["ids"]]))
                parts["probs"].append(z["probs"])
                parts["probs_no_tta"].append(z["probs_no_tta"])
                if "head_probs" in z.files:
                    parts["head"].append(z["head_probs"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise BenchError(f"{path}: unreadable out-of-fold file ({type(exc).__name__}: {one_line(exc)})") from None
    if len(parts["head"]) not in (0, len(parts["rows"])):
        raise BenchError(f"{run.cells_dir / arch}: some folds of seed {seed} have the empty-vs-salt head's "
                         "probabilities and some do not")
    return {k: np.concatenate(v) for k, v in parts.items() if v}


@dataclass
class _Group:
    """One (architecture, seed): its pooled OOF and, when present, its holdout prediction, scored."""

    arch: str
    seed: int
    row: dict[str, Any]
    oof: pd.DataFrame  # per image: id, fold, score, empty_pred
    holdout: pd.DataFrame | None
    probs: np.ndarray
    rows: np.ndarray
    classifier: list[dict[str, Any]]  # classifier.csv rows (OOF, holdout) of a run with the head; [] without


def _cross_fitted(probs: np.ndarray, truth: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
    """Masks of each fold at the threshold chosen on the other folds' pooled OOF; 0.5 when no other fold is done."""
    pred = np.zeros(truth.shape, dtype=bool)
    chosen = {}
    for f in np.unique(folds):
        here = folds == f
        chosen[int(f)] = best_threshold(probs[~here], truth[~here])[0] if (~here).any() else 0.5
        pred[here] = binarise(probs[here], chosen[int(f)])
    return pred, chosen


def _score_group(run: RunDir, arch: str, seed: int, group: pd.DataFrame, data: dict, index: dict[str, int],
                 classes: np.ndarray, held: dict | None) -> _Group:
    pooled = _pooled(run, arch, seed, group, index)
    rows = pooled["rows"]
    truth, folds = data["masks"][rows], data["folds"][rows]
    pred, thresholds = _cross_fitted(pooled["probs"], truth, folds)
    pred_plain, _ = _cross_fitted(pooled["probs_no_tta"], truth, folds)
    scores = tgs_precision(truth, pred)
    head = pooled.get("head")
    # chosen on this group's pooled OOF: applied to the holdout; its own OOF score is shown, never ranked
    decision = postprocess.decide(pooled["probs"], truth, head_probs=head)
    per_fold = pd.Series(scores).groupby(folds).mean()
    empty_truth, empty_pred = ~truth.any(axis=(1, 2)), ~pred.any(axis=(1, 2))
    cls = classes[rows]
    row = {
        "arch": arch, "seed": seed, "encoder": group["encoder"].iloc[0], "recipe": group["recipe"].iloc[0],
        "tuned": group["tuned"].iloc[0] or "", "params": int(group["params"].iloc[0]), "gmacs": group["macs"].iloc[0] / 1e9,
        "train_images_per_s": group["train_images_per_s"].mean(), "infer_images_per_s": group["infer_images_per_s"].mean(),
        "peak_mem_mb": group["peak_mem_mb"].max() if group["peak_mem_mb"].notna().any() else np.nan,
        "oof_score": scores.mean(), "oof_score_no_tta": tgs_precision(truth, pred_plain).mean(),
        "oof_score_pooled_threshold": decision.score_raw, "threshold": decision.threshold,
        "fold_thresholds": " ".join(f"{thresholds[f]:.2f}" for f in sorted(thresholds)),
        "fold_mean": per_fold.mean(), "fold_std": per_fold.std(ddof=1) if len(per_fold) > 1 else np.nan,
        "iou": iou(truth, pred).mean(), "dice": dice(truth, pred).mean(),
        "empty_acc": (empty_truth == empty_pred).mean(),
        "empty_tp": int((empty_truth & empty_pred).sum()), "empty_fn": int((empty_truth & ~empty_pred).sum()),
        "empty_fp": int((~empty_truth & empty_pred).sum()), "empty_tn": int((~empty_truth & ~empty_pred).sum()),
        "checkpoint": group["checkpoint"].iloc[0], "folds_done": len(group),
        "diverged": int((group["status"] != "ok").sum()), "n_images": len(rows),
        "holdout_score": np.nan, "holdout_n": 0, "min_area": 0, "empty_max_prob": np.nan,
    }
    for c in range(N_CLASSES):
        row[f"cov_{c}"] = scores[cls == c].mean() if (cls == c).any() else np.nan
    oof = pd.DataFrame({"id": data["ids"][rows], "fold": folds, "score": scores, "iou": iou(truth, pred),
                        "coverage_class": cls, "empty_truth": empty_truth, "empty_pred": empty_pred})
    if head is not None:
        row["head_cut"] = np.nan
        oof["head_prob"] = head
    holdout, held_probs = None, None
    path = run.holdout_probs_file(arch, seed)
    if held is not None and path.is_file() and len(held["ids"]):
        with np.load(path, allow_pickle=False) as z:
            if list(z["ids"]) == list(held["ids"]):
                held_probs = {k: z[k] for k in ("probs", "head_probs") if k in z.files}
    if held_probs is not None:
        hpred = postprocess.apply(held_probs["probs"], decision, held_probs.get("head_probs"))
        hscores = tgs_precision(held["masks"], hpred)
        row.update(holdout_score=hscores.mean(), holdout_n=len(hscores),
                   min_area=decision.min_area, empty_max_prob=decision.empty_max_prob)
        holdout = pd.DataFrame({"id": held["ids"], "fold": -1, "score": hscores, "iou": iou(held["masks"], hpred),
                                "coverage_class": coverage_class(held["masks"]),
                                "empty_truth": ~held["masks"].any(axis=(1, 2)), "empty_pred": ~hpred.any(axis=(1, 2))})
        if head is not None:
            row["head_cut"] = np.nan if decision.head_cut is None else decision.head_cut
            holdout["head_prob"] = held_probs["head_probs"]
    records = []
    if head is not None:
        held_split = None if held_probs is None else (held_probs["probs"], held_probs["head_probs"], held["masks"])
        records = _classifier_rows(arch, seed, pooled["probs"], head, truth, folds, thresholds, decision, held_split)
    return _Group(arch, seed, row, oof, holdout, pooled["probs"], rows, records)


#: the image-level empty cuts weighed against each other in classifier.csv: (column, the peak-probability cut is a
#: candidate, the head's cut is a candidate); threshold and minimum area are decided as always
CUTS = (("score_no_cut", False, False), ("score_peak_cut", True, False), ("score_head_cut", False, True),
        ("score_both_cuts", True, True))


def _cut(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def _classifier_rows(arch: str, seed: int, probs: np.ndarray, head: np.ndarray, truth: np.ndarray, folds: np.ndarray,
                     thresholds: dict[int, float], decision: postprocess.Decision,
                     held: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> list[dict[str, Any]]:
    """The head of one (arch, seed) as a classifier (at 0.5), as a leaderboard probe (``classifier.probe_table``)
    and as an image-level empty cut against the peak-probability cut and no cut, per split.

    OOF scores are cross-fitted (each fold's threshold and cuts decided on the other folds; NaN with one fold
    done); holdout scores apply the decisions taken on the pooled OOF, so ``score_both_cuts`` on the holdout is
    the leaderboard's ``holdout_score``. ``head_cut`` is the pooled OOF's cut (the holdout's and the test set's),
    ``fold_head_cuts`` each fold's own.
    """
    crossfit = np.unique(folds).size > 1
    splits = {"oof": (probs, head, truth)} if held is None else {"oof": (probs, head, truth), "holdout": held}
    cut_scores: dict[str, dict[str, float]] = {name: {} for name in splits}
    fold_cuts = ""
    for column, peak, use_head in CUTS:
        given = head if use_head else None
        if crossfit:
            scores, decisions = postprocess.cross_fitted(probs, truth, folds, head_probs=given, peak=peak,
                                                         thresholds=thresholds)
            cut_scores["oof"][column] = float(scores.mean())
            if peak and use_head:
                fold_cuts = " ".join(_cut(decisions[f].head_cut) for f in sorted(decisions))
        else:
            cut_scores["oof"][column] = np.nan
        if held is not None:
            pooled = decision if peak and use_head else postprocess.decide(probs, truth, decision.threshold,
                                                                             head_probs=given, peak=peak)
            held_probs, held_head, held_masks = held
            masks = postprocess.apply(held_probs, pooled, held_head if use_head else None)
            cut_scores["holdout"][column] = float(tgs_precision(held_masks, masks).mean())
    rows = []
    for name, (_, split_head, split_truth) in splits.items():
        empty = ~split_truth.any(axis=(1, 2))
        judged = classifier.classifier_metrics(split_head, empty)
        probe = classifier.probe_table(split_head, empty, truth_masks=split_truth)
        rows.append({
            "arch": arch, "seed": seed, "split": name, "n": judged["n"], "n_salt": judged["n_salt"],
            "n_empty": judged["n_empty"], "accuracy": judged["accuracy"], "roc_auc": judged["roc_auc"],
            "tp": judged["tp"], "fp": judged["fp"], "fn": judged["fn"], "tn": judged["tn"],
            **{k: probe[k] for k in PROBE_KEYS}, **cut_scores[name],
            "head_cut": np.nan if decision.head_cut is None else decision.head_cut,
            "fold_head_cuts": fold_cuts if name == "oof" else "",
        })
    return rows


PROBE_KEYS = ("all_empty_score", "probe_score", "oracle_score", "false_salt", "false_salt_cost", "false_empty",
              "false_empty_cost")


def _check_environment(cells: pd.DataFrame, allow_mixed: bool, where: Path) -> list[dict[str, Any]]:
    """The distinct environments (device, dtype, versions, code) of the cells; more than one is refused unless allowed."""
    envs = {json.dumps(environment(ident), sort_keys=True) for ident in cells["identity"]}
    if len(envs) > 1 and not allow_mixed:
        listed = "; ".join(sorted(envs))
        raise BenchError(f"{where}: cells ran in {len(envs)} different environments ({listed}); their scores are not "
                         "comparable as they stand: rerun them in one, or pass --allow-mixed to rank them anyway")
    return [json.loads(e) for e in sorted(envs)]


def _verdict_inputs(groups: list[_Group], source: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(archs, scores, pred_empty, truth_empty, folds) over the seeds every arch has and the images every
    (arch, seed) predicted, shaped (seeds, archs, images) for ``stats.verdict_table``."""
    archs = sorted({g.arch for g in groups})
    seeds = sorted(set.intersection(*({g.seed for g in groups if g.arch == a} for a in archs)))
    frames = {(g.arch, g.seed): (g.holdout if source == "holdout" else g.oof).set_index("id")
              for g in groups if g.seed in seeds}
    common = sorted(set.intersection(*(set(f.index) for f in frames.values())))
    scores = np.stack([np.stack([frames[(a, s)].loc[common, "score"].to_numpy() for a in archs]) for s in seeds])
    empty = np.stack([np.stack([frames[(a, s)].loc[common, "empty_pred"].to_numpy(bool) for a in archs]) for s in seeds])
    first = frames[(archs[0], seeds[0])].loc[common]
    return archs, scores, empty, first["empty_truth"].to_numpy(bool), first["fold"].to_numpy()


def aggregate(run_dir: Path | RunDir, *, allow_mixed: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leaderboard (one row per architecture, ranked with its evidence) and per-image scores.

    The ranking score is the holdout score when every architecture has one, else the cross-fitted
    out-of-fold score, on the images every ranked architecture predicted. All files are written
    atomically and ``aggregate.json`` last: without it (a killed aggregation) the report rebuilds them.
    """
    run = RunDir(run_dir)
    data = run.load_data()
    index = {str(i): k for k, i in enumerate(data["ids"])}
    classes = coverage_class(data["masks"])
    cells = run.metrics_table()
    if cells.empty:
        return pd.DataFrame(), pd.DataFrame()
    environments = _check_environment(cells, allow_mixed, run.path)
    held = run.load_holdout() if run.holdout_data_file.is_file() else None
    groups = [_score_group(run, arch, seed, group, data, index, classes, held)
              for (arch, seed), group in cells.groupby(["arch", "seed"], sort=True)]
    source = "holdout" if all(g.holdout is not None for g in groups) else "oof"
    archs, scores, empty, truth_empty, folds = _verdict_inputs(groups, source)
    verdict = stats.verdict_table(scores, archs, truth_empty=truth_empty, pred_empty=empty,
                                  image_folds=folds if source == "oof" else None)
    per_seed = pd.DataFrame([g.row for g in groups])
    board = per_seed.groupby("arch", sort=False).agg(
        {c: ("mean" if pd.api.types.is_numeric_dtype(per_seed[c]) else "first")
         for c in per_seed.columns if c not in ("arch", "seed")}
    )
    board["seeds"] = per_seed.groupby("arch")["seed"].nunique()
    board = board.reset_index().merge(verdict.rename(columns={"score": "ranked_score"}), on="arch", how="left")
    board["score"] = board["ranked_score"]
    board["score_source"] = source
    board["gap"] = board["oof_score"] - board["holdout_score"]
    board["n_ranked_images"] = verdict.attrs["n_images"]
    board = board.drop(columns="ranked_score").sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    board = board[[*LEAD_COLUMNS, *[c for c in board.columns if c not in LEAD_COLUMNS]]]
    per_image = pd.concat([g.oof.assign(arch=g.arch, seed=g.seed, split="oof") for g in groups]
                          + [g.holdout.assign(arch=g.arch, seed=g.seed, split="holdout") for g in groups
                             if g.holdout is not None], ignore_index=True)
    per_image = per_image[["id", "split", "fold", "arch", "seed", "score", "iou", "coverage_class", "empty_truth",
                           "empty_pred", *(["head_prob"] if "head_prob" in per_image else [])]]
    run.aggregate_file.unlink(missing_ok=True)
    atomic.write_text(run.leaderboard_file, board.to_csv(index=False))
    atomic.write_text(run.per_image_file, per_image.to_csv(index=False))
    records = [r for g in groups for r in g.classifier]
    if records:
        atomic.write_text(run.classifier_file, pd.DataFrame(records).to_csv(index=False))
    gallery_probs = {}
    for g in groups:
        if g.seed == min(x.seed for x in groups if x.arch == g.arch):
            full = np.zeros((len(data["ids"]), *data["masks"].shape[1:]), np.uint8)
            full[g.rows] = g.probs
            gallery_probs[g.arch] = full
    _write_gallery(run, data, board, per_image[per_image["split"] == "oof"], gallery_probs)
    atomic.write_json(run.aggregate_file, {
        "score_source": source, "n_ranked_images": int(verdict.attrs["n_images"]),
        "n_seeds": int(verdict.attrs["n_seeds"]), "cells": [f"{c.arch}/{c.name}" for c in run.done_cells()],
        "environments": environments, "mixed_environments": len(environments) > 1,
        "all_empty_oof": float(all_empty_scores(data["masks"]).mean()),
        "all_empty_holdout": float(all_empty_scores(held["masks"]).mean()) if held is not None and len(held["ids"]) else None,
    })
    return board, per_image


#: the leaderboard's first columns, in this order (outside tools read them by name)
LEAD_COLUMNS = ["rank", "arch", "score", "score_source", "holdout_score", "oof_score", "gap", "p_best", "rank_lo",
                "rank_hi", "learned", "verdict", "recipe", "tuned"]


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


CSV_OPTIONS = {"keep_default_na": False, "na_values": [""]}  # an id such as "NA" or "1e5" stays a string


def _fresh(run: RunDir) -> bool:
    """True when the last aggregation finished (``aggregate.json``, written last) after the last cell, over
    exactly the finished cells: then leaderboard.csv, per_image.csv, gallery.npz and (in a run with the head)
    classifier.csv are complete and current."""
    if not (run.aggregate_file.is_file() and run.leaderboard_file.is_file() and run.per_image_file.is_file()):
        return False
    if run.protocol().get("protocol", {}).get("protocol", {}).get("empty_head") and not run.classifier_file.is_file():
        return False
    if run.aggregate_file.stat().st_mtime < run.newest_cell_mtime():
        return False
    try:
        recorded = atomic.read_json(run.aggregate_file).get("cells")
    except (OSError, ValueError):
        return False
    return recorded == [f"{c.arch}/{c.name}" for c in run.done_cells()]


def current(run_dir: Path | RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard and per-image tables of a run with finished cells as of now: read from the run directory
    when the last aggregation is current, else aggregated again (a partial or resumed run is never stale)."""
    run = RunDir(run_dir)
    if not run.data_file.is_file():
        raise BenchError(f"{run.data_file}: missing, but the run has finished cells")
    if _fresh(run):
        board = pd.read_csv(run.leaderboard_file, dtype={"arch": str, "encoder": str}, **CSV_OPTIONS)
        per_image = pd.read_csv(run.per_image_file, dtype={"id": str, "arch": str}, **CSV_OPTIONS)
        return board, per_image
    return aggregate(run)


def ranked_baseline(manifest: dict[str, Any]) -> float | None:
    """The TGS score of predicting every mask empty on the images the ranking score is computed on (the holdout
    when there is one): the floor any learned model must clear. None before the run is aggregated."""
    if not manifest:
        return None
    return manifest.get("all_empty_holdout" if manifest.get("score_source") == "holdout" else "all_empty_oof")


def format_leaderboard(board: pd.DataFrame, manifest: dict[str, Any] | None = None) -> str:
    """The console table: the ranking score (holdout first), its evidence, the verdict, then what it cost."""
    cols = ["rank", "arch", "score", "holdout_score", "oof_score", "gap", "p_best", "rank_lo", "rank_hi", "verdict",
            "recipe", "params", "train_images_per_s", "folds_done"]
    view = board[[c for c in cols if c in board]].copy()
    view["params"] = (view["params"] / 1e6).map("{:.2f}M".format)
    view["rank"] = [f"{lo:.0f}-{hi:.0f}" if lo != hi else f"{lo:.0f}" for lo, hi in zip(board["rank_lo"], board["rank_hi"])]
    view = view.drop(columns=["rank_lo", "rank_hi"]).rename(columns={"rank": "rank (95%)", "train_images_per_s": "img/s"})
    text = view.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    if manifest:
        source = manifest["score_source"]
        text += (f"\nscore = {'the locked holdout' if source == 'holdout' else 'cross-fitted out-of-fold'} TGS score "
                 f"on {manifest['n_ranked_images']} images, {manifest['n_seeds']} seed(s)")
        if manifest.get("n_seeds") == 1:
            text += "; one seed: training noise is unmeasured, leads it cannot separate from it are 'unresolved'"
        text += f"\nall-empty baseline (predict no salt anywhere) on those images: {ranked_baseline(manifest):.4f}"
        if manifest.get("mixed_environments"):
            text += "\nwarning: cells ran in different environments (--allow-mixed): " + "; ".join(
                json.dumps(e, sort_keys=True) for e in manifest["environments"])
    return text
