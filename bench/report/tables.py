"""What every section's tables share: HTML from pandas Styler with fixed number formats, "n/a" for missing values,
every string HTML-escaped, and the best value of each comparable column highlighted; the leaderboard's columns and
their display view."""
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


def _highlight(values: pd.Series, how: str) -> list[str]:
    """CSS per row: the best value (max or min, NaN ignored) marked; nothing with fewer than two rows."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if len(numbers) < 2 or np.isnan(numbers).all():
        return [""] * len(numbers)
    target = np.nanmax(numbers) if how == "max" else np.nanmin(numbers)
    return [BEST if v == target else "" for v in numbers]


def styled(frame: pd.DataFrame, spec: dict[str, tuple[str, Any, str | None]], uuid: str,
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


def _interval(lo: float, hi: float) -> str:
    return NA if math.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]"


def _collapsed(collapsed: float, n_models: float) -> str:
    """"k of R": the trained models no better than predicting no salt (or predicting no salt on salt images)."""
    return NA if math.isnan(collapsed) else f"{collapsed:.0f} of {n_models:.0f}"


def board_view(board: pd.DataFrame) -> pd.DataFrame:
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


def p_value(value: float) -> str:
    """A p value, "<0.0001" below that."""
    if value is None or math.isnan(value):
        return NA
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def signed(value: float) -> str:
    """A difference, with its sign."""
    return NA if math.isnan(value) else f"{value:+.4f}"
