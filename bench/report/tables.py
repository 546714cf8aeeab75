"""HTML tables from pandas Styler: fixed number formats, "n/a" for missing values, every string
HTML-escaped, and the best value of each comparable column highlighted."""
from __future__ import annotations

import html
import math
from typing import Any, Callable

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

# left-aligned; everything else is a number
TEXT = {"arch", "differences", "empty_max_prob", "encoder", "fold_head_cuts", "head_a", "head_b", "head_cut", "learned",
        "members", "min_area", "other", "recipe", "split", "threshold", "tta", "tuned", "verdict", "vs"}
WRAP = {"verdict", "differences"}  # long sentences: wrapped in a bounded column rather than widening the table
BEST = "background-color: #d8f0dc; font-weight: 600"
NA = "n/a"

# leaderboard.csv column -> (header, format, best is "max" | "min" | None)
LEADERBOARD: dict[str, tuple[str, str | Callable[[Any], str], str | None]] = {
    "rank": ("rank", "{:d}", None),
    "arch": ("architecture", "{}", None),
    "score": ("score (one trained model)", "{:.4f}", "max"),
    "ci": ("95% CI", "{}", None),
    "p_best": ("P(best)", "{:.2f}", "max"),
    "rank_ci": ("rank 95%", "{}", None),
    "verdict": ("verdict", "{}", None),
    "ensemble_score": ("fold ensemble (a submission)", "{:.4f}", "max"),
    "ensemble_gain": ("ensemble gain", "{:+.4f}", None),
    "postprocess_gain": ("post-processing gain", "{:+.4f}", None),
    "oof_score": ("OOF TGS (cross-fitted)", "{:.4f}", "max"),
    "optimism": ("optimism (OOF − holdout)", "{:+.4f}", None),
    "n_models": ("trained models", "{:.0f}", None),
    "collapsed": ("models that did not learn", "{}", None),
    "seed_sd": ("seed SD", "{:.4f}", None),
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
    "min_area": ("min area (px) per seed", "{}", None),
    "empty_max_prob": ("empty if max prob ≤, per seed", "{}", None),
    "head_cut": ("head's cut per seed", "{}", None),
    "oof_score_no_tta": ("OOF TGS (no TTA)", "{:.4f}", "max"),
    "oof_score_pooled_threshold": ("OOF TGS, threshold chosen on itself", "{:.4f}", None),
    "fold": ("OOF fold mean ± std", "{}", "max"),
    "iou": ("IoU", "{:.4f}", "max"),
    "dice": ("Dice", "{:.4f}", "max"),
    "empty_acc": ("empty-image acc.", "{:.3f}", "max"),
    "folds_done": ("folds done", "{:.0f}", None),
    "diverged": ("diverged", "{:.0f}", None),
}
#: verdict cells of the pairwise matrix, by the row architecture's verdict against the column's
VERDICT_CSS = {"better": "background-color: #d8f0dc", "worse": "background-color: #fbdada",
               "equivalent": "background-color: #dfe9fb", "unresolved": "color: #5d6678"}


def _highlight(values: pd.Series, how: str) -> list[str]:
    """CSS per row: the best value (max or min, NaN ignored) marked; nothing with fewer than two rows."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if len(numbers) < 2 or np.isnan(numbers).all():
        return [""] * len(numbers)
    target = np.nanmax(numbers) if how == "max" else np.nanmin(numbers)
    return [BEST if v == target else "" for v in numbers]


def _styled(frame: pd.DataFrame, spec: dict[str, tuple[str, Any, str | None]], uuid: str,
            rank_by: dict[str, str] | None = None, cell_css: pd.DataFrame | None = None) -> str:
    """Render ``frame[spec keys]`` with the headers, formats and highlights of ``spec``; ``rank_by`` maps a
    display column to the numeric column that decides its highlight (e.g. "mean ± std" by the mean); ``cell_css``
    (same shape as ``frame``) styles single cells."""
    columns = [c for c in spec if c in frame.columns]
    frame = frame.reset_index(drop=True)
    styler: Styler = frame[columns].style.set_uuid(uuid).hide(axis="index")
    if cell_css is not None:
        styler = styler.apply(lambda _: cell_css.reset_index(drop=True)[columns], axis=None)
    for column in columns:
        _, fmt, how = spec[column]
        styler = styler.format(fmt, subset=[column], na_rep=NA, escape="html")
        if how:
            css = _highlight(frame[(rank_by or {}).get(column, column)], how)
            styler = styler.apply(lambda _, css=css: css, subset=[column], axis=0)
        if column in TEXT:
            styler = styler.set_table_styles({column: [{"selector": "th", "props": "text-align: left"},
                                                       {"selector": "td", "props": "text-align: left"}]}, overwrite=False)
        if column in WRAP:
            styler = styler.set_table_styles({column: [{"selector": "td", "props": "white-space: normal; min-width: 16rem"}]},
                                             overwrite=False)
    styler = styler.relabel_index([html.escape(spec[c][0]) for c in columns], axis=1)  # headers may name architectures
    return styler.set_table_attributes('class="data"').to_html()


def _mean_std(mean: float, std: float) -> str:
    return NA if math.isnan(mean) else f"{mean:.4f} ± {NA if math.isnan(std) else f'{std:.4f}'}"


def _interval(lo: float, hi: float) -> str:
    return NA if math.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]"


def _collapsed(collapsed: float, n_models: float) -> str:
    """"k of R": the trained models no better than predicting no salt (or predicting no salt on salt images)."""
    return NA if math.isnan(collapsed) else f"{collapsed:.0f} of {n_models:.0f}"


def _board_view(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with its display columns: the score's interval, the rank interval, "k of R" collapsed."""
    frame = board.copy()
    for column in ("rank", "folds_done", "diverged"):
        if column in frame:
            frame[column] = frame[column].astype(int)
    frame["ci"] = [_interval(lo, hi) for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
    frame["collapsed"] = [_collapsed(k, r) for k, r in zip(frame["collapsed"], frame["n_models"])]
    frame["rank_ci"] = [NA if lo != lo else f"{lo:.0f}–{hi:.0f}" if lo != hi else f"{lo:.0f}"
                        for lo, hi in zip(frame["rank_lo"], frame["rank_hi"])]
    frame["learned"] = ["yes" if v in (True, "True") else "no" for v in frame["learned"]]
    for column in ("tuned", "verdict"):
        frame[column] = ["" if pd.isna(v) else str(v) for v in frame[column]]
    return frame


def leaderboard(board: pd.DataFrame) -> str:
    frame = _board_view(board)
    frame["fold"] = [_mean_std(m, s) for m, s in zip(frame["fold_mean"], frame["fold_std"])]
    return _styled(frame, LEADERBOARD, "leaderboard", rank_by={"fold": "fold_mean"})


def variance(board: pd.DataFrame) -> str:
    """Per ranked architecture: how many models were trained, how many did not learn, and the standard deviations
    the score's interval is built from (images, and trained models split into folds and seeds)."""
    frame = _board_view(board[board["score"].notna()])
    spec = {
        "arch": ("architecture", "{}", None),
        "score": ("score", "{:.4f}", None),
        "ci": ("95% CI", "{}", None),
        "n_models": ("trained models", "{:.0f}", None),
        "collapsed": ("did not learn", "{}", None),
        "learned_p": ("p vs no salt (one-sided)", _p, None),
        "image_sd": ("image SD", "{:.4f}", None),
        "replicate_sd": ("model SD (training noise)", "{:.4f}", None),
        "fold_sd": ("fold SD", "{:.4f}", None),
        "seed_sd": ("seed SD", "{:.4f}", None),
    }
    return _styled(frame, spec, "variance")


def cost(board: pd.DataFrame) -> str:
    """Per architecture, what one trained model cost beside what it scored: epochs, counted training PFLOP (the
    same on any machine), training seconds and batch-1 latency on the run's device, size."""
    frame = _board_view(board)
    spec = {**{c: LEADERBOARD[c] for c in ("arch", "score")},
            "epochs": ("epochs", "{:.0f}", None),
            "train_pflop": ("training PFLOP per model (counted)", "{:.3g}", "min"),
            "train_s": ("training s per model (this device)", "{:.0f}", "min"),
            "infer_ms": ("latency ms, batch 1", "{:.2f}", "min"),
            **{c: LEADERBOARD[c] for c in ("train_images_per_s", "params", "gmacs")}}
    return _styled(frame, spec, "cost")


def verdict_matrix(pairs: pd.DataFrame, order: list[str]) -> str:
    """Architectures x architectures: the row's verdict against the column (better / worse / equivalent /
    unresolved) and the difference row minus column, from the pairwise table."""
    compared = set(pairs["arch"]) | set(pairs["other"])
    names = [a for a in order if a in compared]
    at = {a: k for k, a in enumerate(names)}
    cells = [["—"] * len(names) for _ in names]
    for row in pairs.itertuples():
        back = "worse" if row.verdict == "better" else row.verdict
        cells[at[row.arch]][at[row.other]] = f"{row.verdict} {row.diff:+.4f}"
        cells[at[row.other]][at[row.arch]] = f"{back} {-row.diff:+.4f}"
    frame = pd.DataFrame({"arch": names, **{f"vs{k}": [r[k] for r in cells] for k in range(len(names))}})
    spec = {"arch": ("row vs column", "{}", None), **{f"vs{k}": (a, "{}", None) for k, a in enumerate(names)}}
    return _styled(frame, spec, "verdict_matrix", cell_css=frame.map(lambda v: VERDICT_CSS.get(str(v).split(" ")[0], "")))


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
    images), the t test and its Holm adjustment over all pairs, and the verdict; in leaderboard order."""
    rank = {arch: k for k, arch in enumerate(board["arch"])}
    frame = pairs.assign(_a=pairs["arch"].map(rank), _o=pairs["other"].map(rank)).sort_values(["_a", "_o"], kind="stable")
    frame["ci"] = [NA if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
    spec = {
        "arch": ("architecture (higher mean)", "{}", None),
        "other": ("vs", "{}", None),
        "diff": ("difference", _signed, None),
        "se": ("SE", "{:.4f}", None),
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
