"""HTML tables from pandas Styler: fixed number formats, "n/a" for missing values, every string
HTML-escaped, and the best value of each comparable column highlighted."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

# left-aligned; everything else is a number
TEXT = {"arch", "differences", "encoder", "fold_head_cuts", "head_a", "head_b", "head_cut", "learned", "members",
        "other", "recipe", "split", "threshold", "tta", "tuned", "verdict", "vs"}
BEST = "background-color: #d8f0dc; font-weight: 600"
NA = "n/a"

# leaderboard.csv column -> (header, format, best is "max" | "min" | None)
LEADERBOARD: dict[str, tuple[str, str | Callable[[Any], str], str | None]] = {
    "rank": ("rank", "{:d}", None),
    "arch": ("architecture", "{}", None),
    "score": ("score", "{:.4f}", "max"),
    "holdout_score": ("holdout TGS", "{:.4f}", "max"),
    "oof_score": ("OOF TGS (cross-fitted)", "{:.4f}", "max"),
    "optimism": ("optimism (OOF − holdout)", "{:+.4f}", None),
    "ensemble_score": ("fold ensemble", "{:.4f}", "max"),
    "p_best": ("P(best)", "{:.2f}", "max"),
    "rank_ci": ("rank 95%", "{}", None),
    "seed_sd": ("seed sd", "{:.4f}", None),
    "learned": ("learned", "{}", None),
    "recipe": ("recipe", "{}", None),
    "tuned": ("tuned", "{}", None),
    "encoder": ("encoder", "{}", None),
    "params": ("params (M)", lambda v: f"{v / 1e6:.2f}", "min"),
    "gmacs": ("GMACs", "{:.2f}", "min"),
    "train_images_per_s": ("train img/s", "{:.0f}", "max"),
    "infer_images_per_s": ("infer img/s", "{:.0f}", "max"),
    "peak_mem_mb": ("peak mem (MB)", "{:.0f}", "min"),
    "threshold": ("threshold per seed", "{}", None),
    "oof_score_no_tta": ("OOF TGS (no TTA)", "{:.4f}", "max"),
    "oof_score_pooled_threshold": ("OOF TGS, threshold chosen on itself", "{:.4f}", None),
    "fold": ("OOF fold mean ± std", "{}", "max"),
    "iou": ("IoU", "{:.4f}", "max"),
    "dice": ("Dice", "{:.4f}", "max"),
    "empty_acc": ("empty-image acc.", "{:.3f}", "max"),
    "folds_done": ("folds done", "{:.0f}", None),
    "diverged": ("diverged", "{:.0f}", None),
}


def _highlight(values: pd.Series, how: str) -> list[str]:
    """CSS per row: the best value (max or min, NaN ignored) marked; nothing with fewer than two rows."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if len(numbers) < 2 or np.isnan(numbers).all():
        return [""] * len(numbers)
    target = np.nanmax(numbers) if how == "max" else np.nanmin(numbers)
    return [BEST if v == target else "" for v in numbers]


def _styled(frame: pd.DataFrame, spec: dict[str, tuple[str, Any, str | None]], uuid: str,
            rank_by: dict[str, str] | None = None) -> str:
    """Render ``frame[spec keys]`` with the headers, formats and highlights of ``spec``; ``rank_by`` maps a
    display column to the numeric column that decides its highlight (e.g. "mean ± std" by the mean)."""
    columns = [c for c in spec if c in frame.columns]
    frame = frame.reset_index(drop=True)
    styler: Styler = frame[columns].style.set_uuid(uuid).hide(axis="index")
    for column in columns:
        _, fmt, how = spec[column]
        styler = styler.format(fmt, subset=[column], na_rep=NA, escape="html")
        if how:
            css = _highlight(frame[(rank_by or {}).get(column, column)], how)
            styler = styler.apply(lambda _, css=css: css, subset=[column], axis=0)
        if column in TEXT:
            styler = styler.set_table_styles({column: [{"selector": "th", "props": "text-align: left"},
                                                       {"selector": "td", "props": "text-align: left"}]}, overwrite=False)
    styler = styler.relabel_index([spec[c][0] for c in columns], axis=1)
    return styler.set_table_attributes('class="data"').to_html()


def _mean_std(mean: float, std: float) -> str:
    return NA if math.isnan(mean) else f"{mean:.4f} ± {NA if math.isnan(std) else f'{std:.4f}'}"


def leaderboard(board: pd.DataFrame) -> str:
    frame = board.copy()
    for column in ("rank", "folds_done", "diverged"):
        if column in frame:
            frame[column] = frame[column].astype(int)
    frame["fold"] = [_mean_std(m, s) for m, s in zip(frame["fold_mean"], frame["fold_std"])]
    frame["rank_ci"] = [NA if lo != lo else f"{lo:.0f}–{hi:.0f}" if lo != hi else f"{lo:.0f}"
                        for lo, hi in zip(frame["rank_lo"], frame["rank_hi"])]
    frame["learned"] = ["yes" if v in (True, "True") else "no" for v in frame["learned"]]
    frame["tuned"] = ["" if pd.isna(v) else str(v) for v in frame["tuned"]]
    return _styled(frame, LEADERBOARD, "leaderboard", rank_by={"fold": "fold_mean"})


def confusion(board: pd.DataFrame) -> str:
    """Empty-image confusion: does the model say "no salt" exactly when there is none?"""
    spec = {
        "arch": ("architecture", "{}", None),
        "empty_tp": ("empty → predicted empty", "{:.0f}", "max"),
        "empty_fn": ("empty → predicted salt", "{:.0f}", "min"),
        "empty_fp": ("salt → predicted empty", "{:.0f}", "min"),
        "empty_tn": ("salt → predicted salt", "{:.0f}", "max"),
        "empty_acc": ("empty-image acc.", "{:.3f}", "max"),
    }
    return _styled(board, spec, "confusion")


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return NA
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _signed(value: float) -> str:
    return NA if math.isnan(value) else f"{value:+.4f}"


def significance(board: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Every pair of compared architectures: the difference of expected scores, its interval (training noise and
    images), the t test and its Holm adjustment over all pairs, and the verdict."""
    frame = pairs.copy()
    frame["ci"] = [NA if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
    spec = {
        "arch": ("architecture", "{}", None),
        "other": ("vs", "{}", None),
        "diff": ("difference", _signed, None),
        "ci": ("95% CI", "{}", None),
        "df": ("df", lambda v: NA if math.isnan(v) else f"{v:.1f}", None),
        "p": ("p", _p, None),
        "p_holm": ("p (Holm, all pairs)", _p, None),
        "verdict": ("verdict", "{}", None),
    }
    return _styled(frame, spec, "significance")


def ensembles(frame: pd.DataFrame) -> str:
    """``salt-bench predict --evaluate-oof`` results: single models and ensembles, before/after post-processing."""
    frame = frame.copy()
    frame["members"] = frame["members"].astype(str)
    spec = {
        "members": ("members", "{}", None),
        "tta": ("TTA", "{}", None),
        "threshold": ("threshold", "{:.2f}", None),
        "min_area": ("min area (px)", "{:.0f}", None),
        "empty_max_prob": ("empty if max prob ≤", "{:.2f}", None),
        "score_raw": ("OOF TGS", "{:.4f}", "max"),
        "score_post": ("OOF TGS, post-processed (chosen on itself)", "{:.4f}", None),
        "score_crossfit": ("OOF TGS, post-processed, cross-fitted", "{:.4f}", "max"),
        "n_images": ("images", "{:.0f}", None),
    }
    return _styled(frame, spec, "ensembles")


def _head_rows(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """classifier.csv rows in leaderboard order, out-of-fold before holdout; the seed column only with several seeds."""
    rank = {arch: k for k, arch in enumerate(order)}
    rows = frame.assign(_rank=frame["arch"].map(rank).fillna(len(rank)), _split=frame["split"] != "oof")
    rows = rows.sort_values(["_rank", "seed", "_split"], kind="stable").drop(columns=["_rank", "_split"])
    rows["split"] = rows["split"].map({"oof": "out-of-fold", "holdout": "holdout"}).fillna(rows["split"])
    return rows if rows["seed"].nunique() > 1 else rows.drop(columns="seed")


_HEAD_KEYS: dict[str, tuple[str, Any, str | None]] = {
    "arch": ("architecture", "{}", None),
    "seed": ("seed", "{:d}", None),
    "split": ("images", "{}", None),
}


def head_effect(frame: pd.DataFrame, order: list[str]) -> str:
    """The TGS score with no image-level empty cut, the peak-probability cut, the head's cut and both."""
    spec = {
        **_HEAD_KEYS,
        "score_no_cut": ("no empty cut", "{:.4f}", None),
        "score_peak_cut": ("peak-probability cut", "{:.4f}", None),
        "score_head_cut": ("head's cut", "{:.4f}", None),
        "score_both_cuts": ("both cuts", "{:.4f}", None),
        "head_cut": ("head's cut (pooled OOF)", "{}", None),
        "fold_head_cuts": ("head's cut per fold", "{}", None),
    }
    rows = _head_rows(frame, order)
    rows["fold_head_cuts"] = rows["fold_head_cuts"].fillna("")
    rows["head_cut"] = ["none" if math.isnan(v) else f"{v:.2f}" for v in rows["head_cut"]]  # NaN: no cut helped
    return _styled(rows, spec, "head_effect")


def head_confusion(frame: pd.DataFrame, order: list[str]) -> str:
    """The head as a "has salt" classifier at 0.5: confusion counts, accuracy, ROC AUC."""
    spec = {
        **_HEAD_KEYS,
        "n": ("n", "{:d}", None),
        "tp": ("salt → called salt", "{:d}", None),
        "fn": ("salt → called empty", "{:d}", None),
        "fp": ("empty → called salt", "{:d}", None),
        "tn": ("empty → called empty", "{:d}", None),
        "accuracy": ("accuracy", "{:.3f}", None),
        "roc_auc": ("ROC AUC", "{:.3f}", None),
    }
    return _styled(_head_rows(frame, order), spec, "head_confusion")


def probe(frame: pd.DataFrame, order: list[str]) -> str:
    """The seed's probe: all-empty, classifier + placeholder, oracle, and what each kind of error costs."""
    spec = {
        **_HEAD_KEYS,
        "all_empty_score": ("all empty", "{:.4f}", None),
        "probe_score": ("empty except called salt (placeholder)", "{:.4f}", None),
        "oracle_score": ("same, perfect classifier", "{:.4f}", None),
        "false_salt": ("false salt", "{:d}", None),
        "false_salt_cost": ("cost of false salt", "{:.4f}", None),
        "false_empty": ("false empty", "{:d}", None),
        "false_empty_cost": ("cost of false empty", "{:.4f}", None),
    }
    return _styled(_head_rows(frame, order), spec, "probe")


def comparison(frame: pd.DataFrame) -> str:
    """``salt-bench compare``'s table: B - A per architecture on the same images."""
    frame = frame.copy()
    frame["ci"] = [NA if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
    spec = {
        "arch": ("architecture", "{}", None),
        "split": ("images", "{}", None),
        "n_images": ("n", "{:d}", None),
        "head_a": ("A: empty_head", "{}", None),
        "head_b": ("B: empty_head", "{}", None),
        "score_a": ("score A", "{:.4f}", None),
        "score_b": ("score B", "{:.4f}", None),
        "n_models": ("models", "{:d}", None),
        "diff": ("B − A", _signed, None),
        "ci": ("95% CI", "{}", None),
        "p": ("p", _p, None),
        "p_holm": ("p (Holm)", _p, None),
        "verdict": ("verdict", "{}", None),
        "differences": ("the runs differ in", "{}", None),
    }
    return _styled(frame, spec, "comparison")
