"""Section "Coverage & empty images": the score per coverage class (how much of the image is salt) and the
empty-image confusion, where a few stray pixels cost a whole image."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from markupsafe import Markup

from bench.data.folds import N_CLASSES
from bench.report import plots, tables
from bench.report.load import RunData

ID, TITLE, HEADING = "coverage", "Coverage & empty images", "Coverage classes and empty images"


def context(run: RunData) -> dict[str, Any]:
    """The heatmap (with the number of images per class) and the confusion table, or None without finished cells."""
    if not run.has_cells:
        return {"figure": None}
    counts = run.oof_images.drop_duplicates("id").groupby("coverage_class").size()
    return {"figure": coverage_heatmap(run.board, counts), "confusion": Markup(confusion(run.board))}


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
    return tables.styled(board, spec, "confusion")


def coverage_heatmap(board: pd.DataFrame, counts: pd.Series) -> str:
    """Architectures x coverage classes (0 = empty mask), with the number of images per class."""
    columns = [f"cov_{c}" for c in range(N_CLASSES)]
    table = board.set_index("arch")[columns].astype(float)
    table.columns = [f"{c}\n{'empty' if c == 0 else f'≤{c * 10}%'}\nn={int(counts.get(c, 0))}" for c in range(N_CLASSES)]
    with plt.rc_context(plots.RC):
        fig, ax = plt.subplots(figsize=(11, 0.55 * len(table) + 1.6))
        sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", linewidths=0.5,
                    cbar_kws={"label": "mean TGS score"}, ax=ax, annot_kws={"size": 9})
        ax.set(xlabel="coverage class (salt fraction of the image)", ylabel="", title="Score per coverage class")
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=0, labelsize=8)
        return plots.png_uri(fig)
