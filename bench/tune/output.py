"""What tuning shows and leaves for a person: a line per trial, the summary of a study (``Outcome``), and the best
trial's section as a config layer (``<study>.best.yaml``)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from bench import atomic
from bench.config import Config, protocol_hash
from bench.redact import mask_url
from bench.rundir import Cell
from bench.tune.objective import OBJECTIVE


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_line(t: FrozenTrial) -> str:
    """One line per finished trial: number, state, value or reason, parameters, time."""
    if t.state == TrialState.COMPLETE:
        what = f"{t.value:.4f}"
    else:
        what = t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason") or "no reason recorded"
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    secs = f" ({t.duration.total_seconds():.0f} s)" if t.duration else ""
    return f"trial {t.number:>3} {t.state.name.lower():<8} {what}  {params}{secs}"


def write_best(study: optuna.Study, arch: str, path: Path, cfg: Config, config_paths: list[str], overrides: list[str],
               cells: list[Cell], run_dir: Path) -> Path | None:
    """Write the best trial's ``architectures.<arch>`` section as a config layer; None before any trial completes."""
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        return None
    best = study.best_trial
    section = {**best.user_attrs["architectures"][arch], "tuned": f"{study.study_name} trial {best.number}"}
    over = ", ".join(f"fold {c.fold} seed {c.seed}" for c in cells)
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    header = (
        f"# salt-bench tune: best trial {best.number} of study {study.study_name}, {best.value:.4f} = {OBJECTIVE} ({over}),\n"
        f"# under protocol {protocol_hash(cfg)}. Layer it on the config it was tuned with:\n"
        f"#   salt-bench run {' '.join(f'--config {p}' for p in config_paths)} --config {path}{sets} "
        f"--archs {arch} --out {run_dir}-tuned\n"
    )
    return atomic.write_text(path, header + yaml.safe_dump({"architectures": {arch: section}}, sort_keys=False))


@dataclass
class Outcome:
    """What one ``tune_arch`` call left behind, for the summary (and the tests)."""

    arch: str
    study_name: str
    storage: str  # unmasked: it may carry a password; print mask_url(storage)
    counts: dict[str, int]
    added: int
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_yaml: Path | None
    cells: list[Cell]
    baseline: float


def format_outcome(o: Outcome) -> str:
    c = o.counts
    lines = [f"study {o.study_name} in {mask_url(o.storage)}: {sum(c.values())} trials ({o.added} added now): "
             f"{c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed"
             + (f", {c['running']} running" if c["running"] else "") + (f", {c['waiting']} waiting" if c["waiting"] else "")]
    if o.best_number is None:
        lines.append("no complete trial yet: no best parameters")
        return "\n".join(lines)
    over = ", ".join(f"fold {cell.fold} seed {cell.seed}" for cell in o.cells)
    lines.append(f"best: trial {o.best_number}, {o.best_value:.4f} ({OBJECTIVE} over {over})")
    width = max(map(len, o.best_params), default=0)
    lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in o.best_params.items()]
    lines.append(f"best config: {o.best_yaml}")
    lines.append(f"all-empty baseline (predict no salt anywhere) on these folds: {o.baseline:.4f}")
    if o.best_value <= o.baseline:
        lines.append("warning: the best trial does not beat the all-empty baseline; its model may predict nothing. "
                     "Tune with more epochs before trusting these parameters")
    return "\n".join(lines)
