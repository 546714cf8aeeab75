"""The leaderboard as a person reads it on the console (``salt-bench run``): formatting only; the scores, the
verdict and the aggregation record it prints come from ``bench.results``."""
from __future__ import annotations

import json

import pandas as pd

from bench.rundir.tables import Aggregate


def format_leaderboard(board: pd.DataFrame, aggregate: Aggregate | None = None) -> str:
    """The console table: the ranked score with its interval, the claims, the verdict, then what it cost."""
    cols = ["rank", "arch", "score", "ci", "ensemble_score", "oof_score", "p_best", "rank_lo", "rank_hi", "verdict",
            "recipe", "epochs", "params", "train_pflop", "train_images_per_s"]
    view = board.assign(ci=[_interval(lo, hi) for lo, hi in zip(board["ci_lo"], board["ci_hi"])])
    view = view[[c for c in cols if c in view]].copy()
    view["params"] = (view["params"] / 1e6).map("{:.2f}M".format)
    view["epochs"] = [f"{e:.0f}" if e == e else "-" for e in view["epochs"]]
    view["train_pflop"] = [f"{f:.3g}" if f == f else "-" for f in view["train_pflop"]]
    view["rank"] = [_interval(lo, hi, "{:.0f}") for lo, hi in zip(board["rank_lo"], board["rank_hi"])]
    view["p_best"] = [f"{p:.2f}" if p == p else "-" for p in board["p_best"]]
    view = view.drop(columns=["rank_lo", "rank_hi"]).rename(
        columns={"rank": "rank (95%)", "train_images_per_s": "img/s", "ci": "95% CI", "ensemble_score": "ensemble"})
    text = view.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
    if aggregate is not None:
        source = aggregate.score_source
        unit = "trained model" if aggregate.replicate == "model" else "seed's cross-fitted prediction"
        text += (f"\nscore = expected {'locked-holdout' if source == 'holdout' else 'cross-fitted out-of-fold'} TGS "
                 f"score of one model trained by the protocol: the mean over {aggregate.n_models} replicates (each "
                 f"a {unit}) on {aggregate.n_ranked_images} images; intervals count training noise and images")
        if aggregate.seeds_to_resolve:
            text += (f"\nthe top two are not separated; about {aggregate.seeds_to_resolve} seed(s) would resolve "
                     "their observed gap (from the measured variance components)")
        text += f"\nall-empty baseline (predict no salt anywhere) on those images: {aggregate.baseline:.4f}"
        if aggregate.mixed_environments:
            text += "\nwarning: cells ran in different environments (--allow-mixed): " + "; ".join(
                json.dumps(e, sort_keys=True) for e in aggregate.environments)
    return text


def _interval(lo: float, hi: float, fmt: str = "{:.4f}") -> str:
    if lo != lo or hi != hi:
        return "-"
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
