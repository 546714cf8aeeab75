"""Section "Empty-vs-salt head", in runs with ``protocol.empty_head`` only: what the head's cut is worth, the run
against one without the head (``salt-bench compare``), the head as a classifier (ROC) and the seed's probe."""
from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from markupsafe import Markup

from bench.classifier import classifier_metrics
from bench.report import plots, tables
from bench.report.load import RunData

ID, TITLE, HEADING = "head", "Empty-vs-salt head", "Empty-vs-salt head"


def applies(run: RunData) -> bool:
    """Only a run trained with the head, with finished cells and its classifier table, has something to show."""
    return bool(run.empty_head) and run.has_cells and not run.classifier.empty


def context(run: RunData) -> dict[str, Any]:
    """The head's cut's worth, comparisons with other runs, classifier and probe."""
    frame, order = run.classifier, list(run.board["arch"])
    heads = run.per_image.dropna(subset=["head_prob"]) if "head_prob" in run.per_image else pd.DataFrame()
    return {
        "label": f"loss weight {run.empty_head['weight']:g}, dropout {run.empty_head['dropout']:g}",
        "effect": Markup(head_effect(frame, order)),
        "confusion": Markup(head_confusion(frame, order)),
        "probe": Markup(probe(frame, order)),
        "roc": roc_plot(heads, order, plots.palette(order)),
        "comparisons": [{"name": name, "table": Markup(comparison(table))} for name, table in run.comparisons],
    }


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
    return tables.styled(rows, spec, "head_effect")


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
    return tables.styled(_head_rows(frame, order), spec, "head_confusion")


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
    return tables.styled(_head_rows(frame, order), spec, "probe")


def comparison(frame: pd.DataFrame) -> str:
    """``salt-bench compare``'s table: B - A per architecture on the same images."""
    frame = frame.copy()
    frame["ci"] = [tables.NA if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
    spec = {
        "arch": ("architecture", "{}", None),
        "split": ("images", "{}", None),
        "n_images": ("n", "{:d}", None),
        "head_a": ("A: empty_head", "{}", None),
        "head_b": ("B: empty_head", "{}", None),
        "score_a": ("score A", "{:.4f}", None),
        "score_b": ("score B", "{:.4f}", None),
        "n_models": ("models", "{:d}", None),
        "diff": ("B − A", tables.signed, None),
        "ci": ("95% CI", "{}", None),
        "p": ("p", tables.p_value, None),
        "p_holm": ("p (Holm)", tables.p_value, None),
        "verdict": ("verdict", "{}", None),
        "differences": ("the runs differ in", "{}", None),
    }
    return tables.styled(frame, spec, "comparison")


def roc_plot(per_image: pd.DataFrame, order: list[str], colours: plots.Palette) -> str:
    """ROC curves of the empty-vs-salt head ("salt" the positive class), one panel per split (out-of-fold, the
    holdout's fold ensemble as in classifier.csv), one curve per architecture and seed; the legend gives each AUC."""
    splits = [s for s in ("oof", "ensemble") if (per_image["split"] == s).any()] or ["oof"]
    seeds = sorted(per_image["seed"].unique()) if len(per_image) else []
    with plt.rc_context(plots.RC):
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
        return plots.png_uri(fig)
