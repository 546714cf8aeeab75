"""Section "Cost vs score": whether the protocol fixed equal epochs or equal compute, the ranked score against
counted training FLOPs, training seconds and latency with the Pareto front, and the cost table."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.ticker import FuncFormatter

from bench.report import plots, tables
from bench.report.load import RunData

ID, TITLE, HEADING = "pareto", "Cost vs score", "Cost vs score"


def context(run: RunData) -> dict[str, Any]:
    """The budget's banner, the figure and the cost table, or None without finished cells."""
    if not run.has_cells:
        return {"figure": None}
    order = list(run.board["arch"])
    return {"budget": _budget(run),
            "figure": pareto_plot(run.board, plots.palette(order), run.baseline, plots.score_label(run.board)),
            "cost": Markup(cost(run.board))}


def _budget(run: RunData) -> dict[str, Any]:
    """The banner of the cost section: equal epochs, or equal compute and the epochs it gave each architecture."""
    budget = run.protocol.get("budget")
    epochs = (run.config.get("protocol", {}).get("budget") or {}).get("epochs") or {}
    if not budget:
        return {"equal": "epochs", "epochs": run.protocol.get("epochs")}
    unit = "training images" if budget.get("images") is not None else "training FLOPs (counted)"
    amount = budget.get("images") if budget.get("images") is not None else budget.get("train_flops")
    return {"equal": "compute", "amount": f"{amount:.4g}", "unit": unit,
            "per_arch": ", ".join(f"{a} {e}" for a, e in sorted(epochs.items()) if a in set(run.board["arch"]))}


def cost(board: pd.DataFrame) -> str:
    """Per architecture, what one trained model cost beside what it scored: epochs, counted training PFLOP (the
    same on any machine), training seconds and batch-1 latency on the run's device, size."""
    frame = tables.board_view(board)
    spec = {**{c: tables.LEADERBOARD[c] for c in ("arch", "score")},
            "epochs": ("epochs", "{:.0f}", None),
            "train_pflop": ("training PFLOP per model (counted)", "{:.3g}", "min"),
            "train_s": ("training s per model (this device)", "{:.0f}", "min"),
            "infer_ms": ("latency ms, batch 1", "{:.2f}", "min"),
            **{c: tables.LEADERBOARD[c] for c in ("train_images_per_s", "params", "gmacs")}}
    return tables.styled(frame, spec, "cost")


_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 0.3 rather than 3x10^-1 on log axes
_PLAIN_MINOR = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")  # 2 and 5 only: no overlap


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


def pareto_plot(board: pd.DataFrame, colours: plots.Palette, baseline: float | None, score_label: str) -> str:
    """Ranking score vs training compute, training time and latency; the dashed line joins the Pareto-optimal
    architectures (no cheaper one scores higher)."""
    panels = [p for p in COST_PANELS if p[0] in board and board[p[0]].notna().any()] or list(OLD_PANELS)
    with plt.rc_context(plots.RC):
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
        return plots.png_uri(fig)


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
