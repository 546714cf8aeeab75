"""Section "Leaderboard": every architecture's ranked score beside its intervals, ensembles, post-processing and cost
columns, and the single models and ensembles of ``salt-bench predict --evaluate-oof`` when the run has them."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
from markupsafe import Markup

from bench.report import tables
from bench.report.load import RunData
from bench.rundir import Ensembles, RunDir

ID, TITLE, HEADING = "leaderboard", "Leaderboard", "Leaderboard"


def context(run: RunData) -> dict[str, Any]:
    """The leaderboard table and what its note explains (the replicate, the score's source, the folds)."""
    if not run.has_cells:
        return {"leaderboard": None}
    ensembles_file = RunDir(run.run_dir).ensembles_file
    return {
        "leaderboard": Markup(leaderboard(run.board)), "aggregate": run.aggregate,
        "n_folds": int(run.oof_images["fold"].nunique()),
        "ensembles": Markup(ensembles(Ensembles.read(ensembles_file).table)) if ensembles_file.is_file() else None,
    }


def _mean_std(mean: float, std: float) -> str:
    return tables.NA if math.isnan(mean) else f"{mean:.4f} ± {tables.NA if math.isnan(std) else f'{std:.4f}'}"


def leaderboard(board: pd.DataFrame) -> str:
    frame = tables.board_view(board)
    frame["fold"] = [_mean_std(m, s) for m, s in zip(frame["fold_mean"], frame["fold_std"])]
    return tables.styled(frame, tables.LEADERBOARD, "leaderboard", rank_by={"fold": "fold_mean"})


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
    return tables.styled(frame, spec, "ensembles")
