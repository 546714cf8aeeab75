"""The report's figures (seaborn/matplotlib, Agg backend), each returned as a base64 PNG data URI so the
HTML file stays self-contained."""
from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from bench.classifier import classifier_metrics  # noqa: E402
from bench.data.folds import N_CLASSES  # noqa: E402

_RC = {**sns.axes_style("whitegrid"), "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
       "figure.dpi": 100, "savefig.dpi": 100}

_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 0.3 rather than 3x10^-1 on log axes
_PLAIN_MINOR = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")  # 2 and 5 only: no overlap
Palette = dict[str, Any]


def palette(order: list[str]) -> Palette:
    """One stable colour per architecture, shared by every figure."""
    return dict(zip(order, sns.color_palette("tab10", max(len(order), 1))))


def png_uri(fig: plt.Figure) -> str:
    """Render and close ``fig``; no metadata, so the file carries no URL or version string."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return data_uri(buf.getvalue())


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI: the report embeds every image, so it opens with no network and no files."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fold_scores(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean TGS score per (arch, fold, seed): the numbers behind the fold mean +- std."""
    return per_image.groupby(["arch", "fold", "seed"], as_index=False)["score"].mean()


def fold_plot(per_image: pd.DataFrame, order: list[str], colours: Palette) -> str:
    data = fold_scores(per_image)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(order) + 1.5), 3.6))
        boxes = ax.boxplot([data.loc[data["arch"] == a, "score"].to_numpy() for a in order], positions=range(len(order)),
                           widths=0.5, showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for patch, arch in zip(boxes["boxes"], order):
            patch.set(facecolor=colours[arch], alpha=0.35)
        sns.stripplot(data=data, x="arch", y="score", hue="arch", order=order, hue_order=order, palette=colours,
                      ax=ax, size=7, jitter=0.08, edgecolor="black", linewidth=0.6, legend=False)
        ax.set_xticks(range(len(order)), order)
        ax.set(xlabel="", ylabel="TGS score of the fold (OOF, TTA)", title="Score per fold (one point per fold and seed)")
        return png_uri(fig)


def curves_plot(history: pd.DataFrame, order: list[str], colours: Palette, switch_epoch: int | None = None) -> str:
    """Train loss and validation TGS per epoch: mean over folds/seeds with a +-1 sd band; a dotted line
    marks a staged loss switch (the train loss jumps there because the loss itself changes)."""
    data = history.assign(epoch=history["epoch"] + 1)
    by_flops = "train_pflop" in data and data["train_pflop"].notna().any()
    with plt.rc_context(_RC):
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
        return png_uri(fig)


def coverage_heatmap(board: pd.DataFrame, counts: pd.Series) -> str:
    """Architectures x coverage classes (0 = empty mask), with the number of images per class."""
    columns = [f"cov_{c}" for c in range(N_CLASSES)]
    table = board.set_index("arch")[columns].astype(float)
    table.columns = [f"{c}\n{'empty' if c == 0 else f'≤{c * 10}%'}\nn={int(counts.get(c, 0))}" for c in range(N_CLASSES)]
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(11, 0.55 * len(table) + 1.6))
        sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", linewidths=0.5,
                    cbar_kws={"label": "mean TGS score"}, ax=ax, annot_kws={"size": 9})
        ax.set(xlabel="coverage class (salt fraction of the image)", ylabel="", title="Score per coverage class")
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=0, labelsize=8)
        return png_uri(fig)


def _front(x: np.ndarray, y: np.ndarray, higher_x_better: bool) -> np.ndarray:
    """Indices of the Pareto-optimal points (best y for the x cost), sorted by x."""
    order = np.argsort(-x if higher_x_better else x, kind="stable")
    keep, best = [], -np.inf
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=int)


#: (column, scale, axis label, higher is better) of the cost panels, in order; runs written before cost was
#: recorded fall back to size and inference speed
COST_PANELS = (("train_pflop", 1.0, "training PFLOP per model (counted, log)", False),
               ("train_s", 1.0, "training seconds per model, this device (log)", False),
               ("infer_ms", 1.0, "latency ms at batch 1, this device (log)", False))
OLD_PANELS = (("params", 1e-6, "parameters (millions, log)", False),
              ("infer_images_per_s", 1.0, "inference images/s (log)", True))


def pareto_plot(board: pd.DataFrame, colours: Palette, baseline: float | None, score_label: str) -> str:
    """Ranking score vs training compute, training time and latency; the dashed line joins the Pareto-optimal
    architectures (no cheaper one scores higher)."""
    panels = [p for p in COST_PANELS if p[0] in board and board[p[0]].notna().any()] or list(OLD_PANELS)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4), squeeze=False)
        axes = axes[0]
        labels = []
        for ax, (column, scale, label, higher_better) in zip(axes, panels):
            sub = board[["arch", column, "score"]].dropna()
            x, y = sub[column].to_numpy(float) * scale, sub["score"].to_numpy(float)
            for arch, xi, yi in zip(sub["arch"], x, y):
                ax.scatter([xi], [yi], s=70, color=colours.get(arch), edgecolor="black", linewidth=0.6, zorder=3)
            labels.append((ax, list(sub["arch"]), x, y))
            front = _front(x, y, higher_better)
            if len(front) > 1:
                ax.plot(x[front], y[front], "--", color="grey", linewidth=1, zorder=2, label="Pareto front")
            if baseline is not None:
                ax.axhline(baseline, color="firebrick", linestyle=":", linewidth=1, label="all-empty baseline")
            if len(x) and np.all(x > 0):
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(_PLAIN)
                ax.xaxis.set_minor_formatter(_PLAIN_MINOR)
            ax.set(xlabel=label, ylabel=score_label, title=f"score vs {label.split(' (')[0]}")
            ax.margins(x=0.25, y=0.15)
            if len(x) and np.all(x > 0) and x.max() < 1.25 * x.min():  # equal by design (a budget): say so, not
                ax.set_xlim(x.min() / 2, x.max() * 2)                  # magnify rounding into a spread
                ax.set_xticks([float(np.median(x))])
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
                ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
        fig.tight_layout()
        for ax, names, x, y in labels:  # placed once the layout is final: overlaps are measured on the canvas
            _label_points(ax, names, x, y)
        return png_uri(fig)


_LABEL_OFFSETS = ((6, 6), (6, -13), (-6, 6), (-6, -13))  # points: right above, right below, left above, left below


def _label_points(ax: plt.Axes, names: list[str], x: np.ndarray, y: np.ndarray) -> None:
    """Name each point beside it, at the first offset whose text overlaps no name placed before (top point first)."""
    renderer = ax.figure.canvas.get_renderer()
    placed: list[Any] = []
    for i in np.argsort(-y, kind="stable"):
        for j, (dx, dy) in enumerate(_LABEL_OFFSETS):
            text = ax.annotate(names[i], (x[i], y[i]), textcoords="offset points", xytext=(dx, dy), fontsize=9,
                               ha="left" if dx > 0 else "right")
            box = text.get_window_extent(renderer)
            if j == len(_LABEL_OFFSETS) - 1 or not any(box.overlaps(b) for b in placed):
                break
            text.remove()
        placed.append(box)


def roc_plot(per_image: pd.DataFrame, order: list[str], colours: Palette) -> str:
    """ROC curves of the empty-vs-salt head ("salt" the positive class), one panel per split (out-of-fold, the
    holdout's fold ensemble as in classifier.csv), one curve per architecture and seed; the legend gives each AUC."""
    splits = [s for s in ("oof", "ensemble") if (per_image["split"] == s).any()] or ["oof"]
    seeds = sorted(per_image["seed"].unique()) if len(per_image) else []
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 4.4), squeeze=False)
        for ax, split in zip(axes[0], splits):
            rows = per_image[per_image["split"] == split]
            for arch in order:
                for seed in seeds:
                    sub = rows[(rows["arch"] == arch) & (rows["seed"] == seed)]
                    if sub.empty:
                        continue
                    truth_empty = (sub["empty_truth"].astype(str) == "True").to_numpy()
                    m = classifier_metrics(sub["head_prob"].to_numpy(float), truth_empty)
                    label = f"{arch}{f' seed {seed}' if len(seeds) > 1 else ''} (AUC {m['roc_auc']:.3f})"
                    ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], color=colours.get(arch), linewidth=1.6, label=label)
            ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false salt rate (empty images called salt)",
                   ylabel="true salt rate (salt images called salt)",
                   title=f"ROC of the head, {'out-of-fold' if split == 'oof' else 'holdout (fold ensemble)'}")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower right", fontsize=8, frameon=True)
        fig.tight_layout()
        return png_uri(fig)


_SEED_MARKERS = "osD^vP*Xph"


def model_plot(models: pd.DataFrame, board: pd.DataFrame, colours: Palette, baseline: float | None,
               score_label: str, unit: str) -> str:
    """Each ranked architecture's trained models, one dot each (their mean score; the marker tells the seed), beside
    the ranked score (their mean) and its 95% interval, which counts training noise and images."""
    ranked = board[board["score"].notna()]
    order = list(ranked["arch"])
    seeds = sorted(models["seed"].unique())
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(order) + 2.5), 4.0))
        for x, arch in enumerate(order):
            mine = models[models["arch"] == arch].sort_values(["seed", "fold"])
            offsets = np.linspace(-0.28, -0.04, len(mine)) if len(mine) > 1 else np.array([-0.16])
            for dx, row in zip(offsets, mine.itertuples()):
                ax.scatter([x + dx], [row.score], s=36, color=colours.get(arch), edgecolor="black", linewidth=0.5,
                           marker=_SEED_MARKERS[seeds.index(row.seed) % len(_SEED_MARKERS)], zorder=3)
            mean = ranked.loc[ranked["arch"] == arch].iloc[0]
            ax.errorbar([x + 0.16], [mean["score"]], yerr=[[mean["score"] - mean["ci_lo"]], [mean["ci_hi"] - mean["score"]]],
                        fmt="_", markersize=16, color="black", capsize=5, linewidth=1.4, zorder=4)
        if baseline is not None:
            ax.axhline(baseline, color="firebrick", linestyle=":", linewidth=1)
        handles = [plt.Line2D([], [], linestyle="", marker=_SEED_MARKERS[k % len(_SEED_MARKERS)], color="grey",
                              markeredgecolor="black", label=f"{unit}, seed {s}") for k, s in enumerate(seeds)]
        handles.append(plt.Line2D([], [], linestyle="-", marker="_", markersize=12, color="black",
                                  label="mean and 95% CI"))
        if baseline is not None:
            handles.append(plt.Line2D([], [], linestyle=":", color="firebrick", label="all-empty baseline"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set(xlabel="", ylabel=score_label, title=f"Score of each {unit} and the architecture's mean")
        return png_uri(fig)
