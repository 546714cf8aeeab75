"""Section "Learning curves": train loss and validation score per epoch (and per counted FLOP when recorded), the
mean over folds and seeds with a band of one standard deviation."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from bench.report import plots
from bench.report.load import RunData

ID, TITLE, HEADING = "curves", "Learning curves", "Learning curves"


def context(run: RunData) -> dict[str, Any]:
    """The figure, or None without finished cells or without a training history."""
    if not run.has_cells or run.history.empty:
        return {"figure": None}
    order = list(run.board["arch"])
    return {"figure": curves_plot(run.history, order, plots.palette(order), run.switch_epoch)}


def curves_plot(history: pd.DataFrame, order: list[str], colours: plots.Palette, switch_epoch: int | None = None) -> str:
    """Train loss and validation TGS per epoch: mean over folds/seeds with a +-1 sd band; a dotted line
    marks a staged loss switch (the train loss jumps there because the loss itself changes)."""
    data = history.assign(epoch=history["epoch"] + 1)
    by_flops = "train_pflop" in data and data["train_pflop"].notna().any()
    with plt.rc_context(plots.RC):
        fig, axes = plt.subplots(1, 3 if by_flops else 2, figsize=(16 if by_flops else 11, 3.8))
        panels = ((axes[0], "train_loss", "train loss"), (axes[1], "val_score", "validation TGS (thr 0.5, no TTA)"))
        if by_flops:  # which learns fastest per FLOP, from one run
            sns.lineplot(data=data.dropna(subset=["val_score"]), x="train_pflop", y="val_score", hue="arch",
                         hue_order=order, palette=colours, errorbar="sd", marker="o", markersize=4, ax=axes[2])
            axes[2].set(xlabel="training PFLOP spent (counted)", ylabel="validation TGS",
                        title="validation TGS vs training compute")
        for ax, column, label in panels:
            sns.lineplot(data=data, x="epoch", y=column, hue="arch", hue_order=order, palette=colours,
                         errorbar="sd", marker="o", markersize=4, ax=ax, legend=ax is axes[-1])
            ax.set(ylabel=label, title=label)
            epochs = np.unique(data["epoch"])
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if switch_epoch is not None and 0 < switch_epoch < data["epoch"].max():
                ax.axvline(switch_epoch + 0.5, color="grey", linestyle=":", linewidth=1)
                ax.annotate("loss switch", (switch_epoch + 0.5, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", fontsize=8, color="grey")
        if axes[-1].get_legend() is not None:
            sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), title="architecture", frameon=False)
        fig.tight_layout()
        return plots.png_uri(fig)
