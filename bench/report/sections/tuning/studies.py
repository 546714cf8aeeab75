"""The tuning section's Optuna studies, stored under ``<run_dir>/tuning/*.db`` (SQLite), drawn with Optuna's own
matplotlib plots. Files are opened read-only first, so a SQLite file that is not an Optuna database is
skipped instead of having Optuna's tables created in it."""
from __future__ import annotations

import math
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
import optuna
import sqlalchemy.exc
from optuna.trial import TrialState
from optuna.visualization import matplotlib as ovm

from bench.errors import BenchError
from bench.report.plots import png_uri
from bench.rundir import RunDir


def _is_optuna_db(path: Path) -> bool:
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as con:
            return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone() is not None
    except sqlite3.DatabaseError:
        return False


def find_studies(run_dir: Path) -> list[optuna.Study]:
    """Every study in every Optuna SQLite file under ``run_dir/tuning/`` (sorted by file, then name)."""
    studies: list[optuna.Study] = []
    for path in RunDir(run_dir).study_dbs():
        if not _is_optuna_db(path):
            continue
        url = f"sqlite:///{path.resolve()}"
        try:
            for name in sorted(optuna.get_all_study_names(storage=url)):
                studies.append(optuna.load_study(study_name=name, storage=url))
        except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, KeyError) as exc:
            raise BenchError(f"{path}: cannot read the Optuna study database ({type(exc).__name__})") from None
    return studies


def _figure(plot: Any, study: optuna.Study) -> str | None:
    """Optuna's plot as a PNG, or None when the study has too little to plot."""
    with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna switches the global style to ggplot
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            ax = plot(study)
        except (ValueError, RuntimeError):
            return None
        if plot is ovm.plot_optimization_history:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # trial numbers are whole
        fig = ax.figure
        fig.set_size_inches(6.4, 3.8)
        return png_uri(fig)


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Counts, best trial and figures of one study; fields are None where they do not apply."""
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    single = len(study.directions) == 1
    best = study.best_trial if single and complete else None
    has_params = any(t.params for t in complete)
    return {
        "name": study.study_name,
        "direction": ", ".join(d.name.lower() for d in study.directions),
        "n_trials": len(states), "n_complete": len(complete),
        "n_pruned": states.count(TrialState.PRUNED), "n_failed": states.count(TrialState.FAIL),
        "best_value": None if best is None or best.value is None or math.isnan(best.value) else best.value,
        "best_number": None if best is None else best.number,
        "best_params": sorted(best.params.items()) if best is not None else [],
        "history": _figure(ovm.plot_optimization_history, study) if single and complete else None,
        "importances": _figure(ovm.plot_param_importances, study) if single and len(complete) >= 2 and has_params else None,
        "multi_objective": not single,
    }
