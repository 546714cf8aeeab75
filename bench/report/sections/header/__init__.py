"""Section "Run": the answer first (what is estimated, who wins, how sure, what a submission would get), the warnings
a reader must see before any table, then what identifies the run (data, protocol hash, environment)."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import yaml

from bench.report.load import RunData

ID, TITLE, HEADING = "header", "Run", "Run"
ENV_KEYS = [("device", "device"), ("device_name", "device name"), ("torch", "torch"), ("smp", "segmentation-models-pytorch"),
            ("timm", "timm"), ("optuna", "optuna"), ("numpy", "numpy"), ("python", "python"), ("threads", "CPU threads"),
            ("precision", "arithmetic"),
            ("git_commit", "git commit"), ("platform", "platform")]


def _learned(ranked: pd.DataFrame, alpha: float) -> pd.Series:
    """The ranked rows shown better than predicting no salt: the rows the claims compare."""
    return pd.to_numeric(ranked["learned_p"], errors="coerce") < alpha


def no_claims(run: RunData) -> str | None:
    """Why no comparison is claimed (the first learned row's verdict says), or None when some rows are compared or
    none learned; the verdict section says it too."""
    ranked = run.board[run.board["score"].notna()]
    shown = ranked[_learned(ranked, run.aggregate.alpha)]
    return None if ranked["p_best"].notna().any() or shown.empty else str(shown["verdict"].iloc[0])


def _runner_up(ranked: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, Any] | None:
    """The next architecture compared with the first, and the pairwise verdict between them."""
    best = ranked["arch"].iloc[0]
    for other in ranked["arch"].iloc[1:]:
        pair = pairs[(pairs["arch"] == best) & (pairs["other"] == other)]
        if len(pair):
            p = pair.iloc[0]
            return {"arch": other, "diff": p["diff"], "lo": p["ci_lo"], "hi": p["ci_hi"], "p": p["p_holm"],
                    "verdict": p["verdict"]}
    return None


def _summary(run: RunData) -> dict[str, Any]:
    """The one-paragraph answer at the top: what is estimated, who wins, how sure, what a submission would get."""
    board, aggregate = run.board, run.aggregate
    ranked = board[board["score"].notna()]
    best = ranked.iloc[0]
    learned = _learned(ranked, aggregate.alpha)
    compared = ranked["p_best"].notna()  # the rows the claims are about
    return {
        "winner": best["arch"], "score": best["score"], "ci_lo": best["ci_lo"], "ci_hi": best["ci_hi"],
        "source": best["score_source"], "oof": best["oof_score"], "ensemble": best["ensemble_score"],
        "p_best": best["p_best"], "rank_lo": best["rank_lo"], "rank_hi": best["rank_hi"],
        "params": best["params"] / 1e6, "gmacs": best["gmacs"], "winner_learned": str(best["learned"]) == "True",
        "n_images": aggregate.n_ranked_images, "n_models": aggregate.n_models,
        "unit": "trained model" if aggregate.replicate == "model" else "seed's cross-fitted prediction",
        "claims": bool(compared.iloc[0]), "no_claims": no_claims(run),
        "seeds_to_resolve": aggregate.seeds_to_resolve, "rope": aggregate.rope,
        "best_set": list(ranked.loc[ranked["in_best_set"].astype(str) == "True", "arch"]),
        "n_compared": int(compared.sum()),
        "runner_up": _runner_up(ranked, run.pairs) if len(run.pairs) else None,
        "not_learned": list(ranked.loc[~learned, "arch"]),
        "collapsed": [(r.arch, int(r.collapsed), int(r.n_models)) for r in ranked.itertuples() if r.collapsed > 0],
        "incomplete": sorted(aggregate.incomplete.items()),
        "recipes": sorted(set(board["recipe"].astype(str))), "baseline": run.baseline,
    }


def context(run: RunData) -> dict[str, Any]:
    """The answer and its warnings (with finished cells), the run's identity, environment, protocol and config."""
    return {
        "summary": _summary(run) if run.has_cells else None, "aggregate": run.aggregate,
        "config_name": run.config.get("name"),
        "date": run.env.get("time"), "protocol_hash": run.protocol_hash,
        "protocol_json": json.dumps(run.protocol_record.protocol, indent=2, sort_keys=True),
        "config_yaml": yaml.safe_dump(run.config, sort_keys=False) if run.config else "",
        "env": [(label, run.env[key]) for key, label in ENV_KEYS if run.env.get(key) not in (None, "")],
        "n_images": int(run.oof_images["id"].nunique()) if run.has_cells else None,
        "diverged": run.cells[run.cells["status"] != "ok"][["arch", "fold", "seed", "stop_reason"]].to_dict("records")
        if run.has_cells else [],
    }
