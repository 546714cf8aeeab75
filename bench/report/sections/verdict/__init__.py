"""Section "Verdict": is a difference between architectures real? The pairwise verdicts (matrix and table), each
trained model's score beside its architecture's mean, and the variance components the intervals are built from."""
from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from markupsafe import Markup

from bench.report import plots, tables
from bench.report.load import RunData
from bench.report.sections.header import no_claims

ID, TITLE, HEADING = "verdict", "Verdict", "Verdict: is the difference real?"


def context(run: RunData) -> dict[str, Any]:
    """The verdict's tables and figure, and why no comparison is claimed when none is."""
    if not run.has_cells:
        return {"finished": False}
    order = list(run.board["arch"])
    compared = len(run.pairs) > 0
    unit = "trained model" if run.aggregate.replicate == "model" else "seed's OOF prediction"
    return {
        "finished": True, "aggregate": run.aggregate,
        "no_claims": no_claims(run), "seeds_to_resolve": run.aggregate.seeds_to_resolve,
        "significance": Markup(significance(run.board, run.pairs)) if compared else None,
        "verdict_matrix": Markup(verdict_matrix(run.pairs, order)) if compared else None,
        "n_pairs": len(run.pairs),
        "models": model_plot(run.model_scores, run.board, plots.palette(order), run.baseline, plots.score_label(run.board),
                             unit),
        "variance": Markup(variance(run.board)),
    }


#: verdict cells of the pairwise matrix, by the row architecture's verdict against the column's
VERDICT_CSS = {"better": "background-color: #d8f0dc", "worse": "background-color: #fbdada",
               "equivalent": "background-color: #dfe9fb", "unresolved": "color: #5d6678"}


def variance(board: pd.DataFrame) -> str:
    """Per ranked architecture: how many models were trained, how many did not learn, and the standard deviations
    the score's interval is built from (images, and trained models split into folds and seeds)."""
    frame = tables.board_view(board[board["score"].notna()])
    spec = {
        "arch": ("architecture", "{}", None),
        "score": ("score", "{:.4f}", None),
        "ci": ("95% CI", "{}", None),
        "n_models": ("trained models", "{:.0f}", None),
        "collapsed": ("did not learn", "{}", None),
        "learned_p": ("p vs no salt (one-sided)", tables.p_value, None),
        "image_sd": ("image SD", "{:.4f}", None),
        "replicate_sd": ("model SD (training noise)", "{:.4f}", None),
        "fold_sd": ("fold SD", "{:.4f}", None),
        "seed_sd": ("seed SD", "{:.4f}", None),
    }
    return tables.styled(frame, spec, "variance")


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
    return tables.styled(frame, spec, "verdict_matrix", cell_css=frame.map(lambda v: VERDICT_CSS.get(str(v).split(" ")[0], "")))


def significance(board: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Every pair of compared architectures: the difference of expected scores, its interval (training noise and
    images), the t test and its Holm adjustment over all pairs, and the verdict; in leaderboard order."""
    rank = {arch: k for k, arch in enumerate(board["arch"])}
    frame = pairs.assign(_a=pairs["arch"].map(rank), _o=pairs["other"].map(rank)).sort_values(["_a", "_o"], kind="stable")
    frame["ci"] = [tables.NA if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
    spec = {
        "arch": ("architecture (higher mean)", "{}", None),
        "other": ("vs", "{}", None),
        "diff": ("difference", tables.signed, None),
        "se": ("SE", "{:.4f}", None),
        "ci": ("95% CI", "{}", None),
        "df": ("df", lambda v: tables.NA if math.isnan(v) else f"{v:.1f}", None),
        "p": ("p", tables.p_value, None),
        "p_holm": ("p (Holm, all pairs)", tables.p_value, None),
        "verdict": ("verdict", "{}", None),
    }
    return tables.styled(frame, spec, "significance")


_SEED_MARKERS = "osD^vP*Xph"


def model_plot(models: pd.DataFrame, board: pd.DataFrame, colours: plots.Palette, baseline: float | None,
               score_label: str, unit: str) -> str:
    """Each ranked architecture's trained models, one dot each (their mean score; the marker tells the seed), beside
    the ranked score (their mean) and its 95% interval, which counts training noise and images."""
    ranked = board[board["score"].notna()]
    order = list(ranked["arch"])
    seeds = sorted(models["seed"].unique())
    with plt.rc_context(plots.RC):
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
        return plots.png_uri(fig)
