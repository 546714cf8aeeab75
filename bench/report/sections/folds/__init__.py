"""Section "Per fold": each architecture's out-of-fold score per fold and seed, a box and its points."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from bench.report import plots
from bench.report.load import RunData

ID, TITLE, HEADING = "folds", "Per fold", "Per fold"


def context(run: RunData) -> dict[str, Any]:
    """The figure, or None without finished cells."""
    if not run.has_cells:
        return {"figure": None}
    order = list(run.board["arch"])
    return {"figure": fold_plot(run.oof_images, order, plots.palette(order))}


def fold_scores(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean TGS score per (arch, fold, seed): the numbers behind the fold mean +- std."""
    return per_image.groupby(["arch", "fold", "seed"], as_index=False)["score"].mean()


def fold_plot(per_image: pd.DataFrame, order: list[str], colours: plots.Palette) -> str:
    data = fold_scores(per_image)
    with plt.rc_context(plots.RC), plots.fixed_jitter():
        fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(order) + 1.5), 3.6))
        boxes = ax.boxplot([data.loc[data["arch"] == a, "score"].to_numpy() for a in order], positions=range(len(order)),
                           widths=0.5, showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for patch, arch in zip(boxes["boxes"], order):
            patch.set(facecolor=colours[arch], alpha=0.35)
        sns.stripplot(data=data, x="arch", y="score", hue="arch", order=order, hue_order=order, palette=colours,
                      ax=ax, size=7, jitter=0.08, edgecolor="black", linewidth=0.6, legend=False)
        ax.set_xticks(range(len(order)), order)
        ax.set(xlabel="", ylabel="TGS score of the fold (OOF, TTA)", title="Score per fold (one point per fold and seed)")
        return plots.png_uri(fig)
