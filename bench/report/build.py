"""`salt-bench report`: one run directory -> one self-contained HTML file (inline CSS, base64 figures,
no network access when opened). Every string from data or config goes through Jinja2 autoescape."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml
from markupsafe import Markup

from bench import atomic, results
from bench.report import gallery, plots, tables, tuning
from bench.report.load import RunData, load_run
from bench.rundir import Ensembles, RunDir

#: the y label of a plot of the leaderboard's ``score``, by its ``score_source``
SCORE_LABEL = {"holdout": "locked-holdout TGS score", "oof": "cross-fitted OOF TGS score"}
SECTIONS = [
    ("header", "Run"), ("leaderboard", "Leaderboard"), ("verdict", "Verdict"), ("folds", "Per fold"),
    ("curves", "Learning curves"), ("coverage", "Coverage & empty images"), ("pareto", "Cost vs score"),
    ("gallery", "Gallery"), ("tuning", "Tuning"),
]
HEAD_SECTION = ("head", "Empty-vs-salt head")  # after "coverage", in runs with protocol.empty_head only
ENV_KEYS = [("device", "device"), ("device_name", "device name"), ("torch", "torch"), ("smp", "segmentation-models-pytorch"),
            ("timm", "timm"), ("optuna", "optuna"), ("numpy", "numpy"), ("python", "python"), ("threads", "CPU threads"),
            ("precision", "arithmetic"),
            ("git_commit", "git commit"), ("platform", "platform")]


def _fmt(value: Any, spec: str = ".4f") -> str:
    """Number for the page, or "n/a" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    return env


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
    board, manifest = run.board, run.manifest
    ranked = board[board["score"].notna()]
    best = ranked.iloc[0]
    alpha = manifest.get("alpha", 0.05)
    learned_p = pd.to_numeric(ranked["learned_p"], errors="coerce")
    compared = ranked["p_best"].notna()  # the rows the claims are about
    shown = ranked[learned_p < alpha]  # better than predicting no salt: the rows the claims compare
    return {
        "winner": best["arch"], "score": best["score"], "ci_lo": best["ci_lo"], "ci_hi": best["ci_hi"],
        "source": best["score_source"], "oof": best["oof_score"], "ensemble": best["ensemble_score"],
        "p_best": best["p_best"], "rank_lo": best["rank_lo"], "rank_hi": best["rank_hi"],
        "params": best["params"] / 1e6, "gmacs": best["gmacs"], "winner_learned": str(best["learned"]) == "True",
        "n_images": manifest.get("n_ranked_images"), "n_models": manifest.get("n_models"),
        "unit": "trained model" if manifest.get("replicate") == "model" else "seed's cross-fitted prediction",
        "claims": bool(compared.iloc[0]),
        "no_claims": None if compared.any() or shown.empty else str(shown["verdict"].iloc[0]),
        "seeds_to_resolve": manifest.get("seeds_to_resolve"), "rope": manifest.get("rope"),
        "best_set": list(ranked.loc[ranked["in_best_set"].astype(str) == "True", "arch"]),
        "n_compared": int(compared.sum()),
        "runner_up": _runner_up(ranked, run.pairs) if len(run.pairs) else None,
        "not_learned": list(ranked.loc[~(learned_p < alpha), "arch"]),
        "collapsed": [(r.arch, int(r.collapsed), int(r.n_models)) for r in ranked.itertuples() if r.collapsed > 0],
        "incomplete": sorted((manifest.get("incomplete") or {}).items()),
        "recipes": sorted(set(board["recipe"].astype(str))), "baseline": run.baseline,
    }


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


def _figures(run: RunData, order: list[str]) -> dict[str, str | None]:
    colours = plots.palette(order)
    counts = run.oof_images.drop_duplicates("id").groupby("coverage_class").size()
    return {
        "folds": plots.fold_plot(run.oof_images, order, colours),
        "curves": plots.curves_plot(run.history, order, colours, run.switch_epoch) if not run.history.empty else None,
        "coverage": plots.coverage_heatmap(run.board, counts),
        "pareto": plots.pareto_plot(run.board, colours, run.baseline, SCORE_LABEL[str(run.board["score_source"].iloc[0])]),
        "models": plots.model_plot(run.model_scores, run.board, colours, run.baseline,
                                   SCORE_LABEL[str(run.board["score_source"].iloc[0])],
                                   "trained model" if run.manifest.get("replicate") == "model" else "seed's OOF prediction"),
    }


def _sections(run: RunData) -> list[tuple[str, str]]:
    if not (run.empty_head and run.has_cells and not run.classifier.empty):
        return SECTIONS
    at = [s for s, _ in SECTIONS].index("coverage") + 1
    return [*SECTIONS[:at], HEAD_SECTION, *SECTIONS[at:]]


def _head(run: RunData, order: list[str]) -> dict[str, Any]:
    """The empty-vs-salt head's section: its cut's worth, comparisons with other runs, classifier and probe."""
    frame = run.classifier
    label = f"loss weight {run.empty_head['weight']:g}, dropout {run.empty_head['dropout']:g}"
    heads = run.per_image.dropna(subset=["head_prob"]) if "head_prob" in run.per_image else pd.DataFrame()
    return {
        "label": label,
        "effect": Markup(tables.head_effect(frame, order)),
        "confusion": Markup(tables.head_confusion(frame, order)),
        "probe": Markup(tables.probe(frame, order)),
        "roc": plots.roc_plot(heads, order, plots.palette(order)),
        "comparisons": [{"name": name, "table": Markup(tables.comparison(table))} for name, table in run.comparisons],
    }


def context(run: RunData) -> dict[str, Any]:
    """Everything the template shows, computed from the run directory alone."""
    sections = _sections(run)
    ctx: dict[str, Any] = {
        "run": run, "sections": sections, "number": {sid: k for k, (sid, _) in enumerate(sections, 1)},
        "config_name": run.config.get("name"),
        "date": run.env.get("time"), "protocol_hash": run.protocol_hash,
        "protocol_json": json.dumps(run.protocol_record, indent=2, sort_keys=True),
        "config_yaml": yaml.safe_dump(run.config, sort_keys=False) if run.config else "",
        "env": [(label, run.env[key]) for key, label in ENV_KEYS if run.env.get(key) not in (None, "")],
        "n_images": int(run.oof_images["id"].nunique()) if run.has_cells else None,
        "studies": [tuning.study_summary(s) for s in tuning.find_studies(run.run_dir)],
        "legend": [(name, gallery.css_colour(colour)) for name, colour in gallery.LEGEND],
        "truth_colour": gallery.css_colour(gallery.TRUTH),
    }
    if not run.has_cells:
        return ctx
    order = list(run.board["arch"])
    ctx.update({
        "summary": _summary(run),
        "manifest": run.manifest,
        "leaderboard": Markup(tables.leaderboard(run.board)),
        "confusion": Markup(tables.confusion(run.board)),
        "significance": Markup(tables.significance(run.board, run.pairs)) if len(run.pairs) else None,
        "verdict_matrix": Markup(tables.verdict_matrix(run.pairs, order)) if len(run.pairs) else None,
        "variance": Markup(tables.variance(run.board)),
        "cost": Markup(tables.cost(run.board)), "budget": _budget(run),
        "n_pairs": len(run.pairs),
        "n_folds": int(run.oof_images["fold"].nunique()),
        "figures": _figures(run, order),
        "gallery": gallery.gallery_rows(run.gallery, run.board, run.oof_images) if run.gallery else [],
        "ensembles": Markup(tables.ensembles(Ensembles.read(RunDir(run.run_dir).ensembles_file).table))
        if RunDir(run.run_dir).ensembles_file.is_file() else None,
        "diverged": run.cells[run.cells["status"] != "ok"][["arch", "fold", "seed", "stop_reason"]].to_dict("records"),
    })
    if HEAD_SECTION in sections:
        ctx["head"] = _head(run, order)
    return ctx


def render(run: RunData) -> str:
    return _environment().get_template("template.html.j2").render(**context(run))


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """``salt-bench report``: bring the run's aggregation up to date with its finished cells (the loader only
    reads), then write the report of ``run_dir`` (default ``<run_dir>/report.html``) atomically; return its path."""
    if RunDir(run_dir).protocol_file.is_file() and RunDir(run_dir).done_cells():
        results.current(run_dir)
    run = load_run(Path(run_dir))
    path = Path(out) if out is not None else RunDir(run_dir).report_file
    return atomic.write_text(path, render(run))
