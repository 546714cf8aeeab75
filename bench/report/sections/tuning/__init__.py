"""Section "Tuning": each Optuna study stored in the run (trials, best value and parameters, history and
parameter importances)."""
from __future__ import annotations

from typing import Any

from bench.report.load import RunData
from bench.report.sections.tuning import studies

ID, TITLE, HEADING = "tuning", "Tuning", "Tuning"


def context(run: RunData) -> dict[str, Any]:
    """One summary per study found under the run's ``tuning/``."""
    return {"studies": [studies.study_summary(s) for s in studies.find_studies(run.run_dir)]}
