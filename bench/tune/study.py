"""One study: created or resumed (its signature must match), ``n_trials`` trials added, its ``Outcome`` returned."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from bench import prepare
from bench.cell.data import DeviceData
from bench.config import Config, protocol_hash
from bench.errors import BenchError
from bench.progress import trial_progress
from bench.redact import mask_url
from bench.rundir import Cell, RunDir
from bench.tune.objective import OBJECTIVE, empty_baseline, make_objective
from bench.tune.output import Outcome, trial_line, write_best
from bench.tune.space import Space
from bench.tune.storage import open_storage


def signature(cfg: Config, arch: str, cells: list[Cell]) -> dict[str, Any]:
    """What makes trials of one study comparable; a resumed study must match it."""
    sig = {"arch": arch, "protocol_hash": protocol_hash(cfg), "arch_config": cfg.architectures.get(arch) or {},
           "cells": [[c.fold, c.seed] for c in cells], "objective": OBJECTIVE}
    return json.loads(json.dumps(sig))


def check_study(study: optuna.Study, sig: dict[str, Any], where: str) -> None:
    old = study.user_attrs.get("salt_bench")
    if old is None:
        study.set_user_attr("salt_bench", sig)
        return
    for key in ("arch", "protocol_hash", "arch_config", "cells"):
        if old.get(key) != sig[key]:
            raise BenchError(f"{where}: study {study.study_name!r} was tuned with {key}={old.get(key)}, this command "
                             f"gives {sig[key]}; trials would not be comparable: use another --study")


def tune_arch(cfg: Config, arch: str, space: Space, *, run_dir: Path, data: DeviceData, assignment: np.ndarray,
              folds: list[int] | None, n_trials: int | None, timeout: float | None, storage: str | None = None,
              study_name: str | None = None, config_paths: list[str] | None = None, overrides: list[str] | None = None,
              progress: bool = False, store: optuna.storages.BaseStorage | None = None) -> Outcome:
    """Create or resume the study of ``arch`` and add ``n_trials`` trials (or run for ``timeout`` seconds).

    ``store`` is ``storage`` already opened (``open_storage``), so that several studies share one connection."""
    study_name = study_name or f"tune-{arch}"
    run = RunDir(run_dir)
    run.tuning_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{run.study_db(study_name).resolve()}"
    cells = prepare.grid(cfg, [arch], folds)
    store = store or open_storage(url, space)
    try:
        before = [t.state for t in optuna.load_study(study_name=study_name, storage=store).get_trials(deepcopy=False)]
    except KeyError:  # a new study
        before = []
    existing = len(before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # seeded by the study's length too: a resumed study must not replay its first random points
        sampler = optuna.samplers.TPESampler(seed=space.sampler["seed"] + existing, multivariate=True, constant_liar=True,
                                             n_startup_trials=space.sampler["n_startup_trials"])
        study = optuna.create_study(study_name=study_name, storage=store, sampler=sampler, pruner=space.make_pruner(),
                                    direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise BenchError(f"{mask_url(url)}: study {study_name!r} minimises; the TGS score is maximised: use another --study")
    check_study(study, signature(cfg, arch, cells), mask_url(url))
    best_path = run.study_best_file(study_name)
    paths, sets = config_paths or ["<config>"], overrides or []
    added, started = [0], time.monotonic()

    def on_trial_end(study: optuna.Study, trial: FrozenTrial) -> None:
        added[0] += 1
        print(f"{trial_line(trial)}  {trial_progress(added[0], n_trials, timeout, time.monotonic() - started)}",
              flush=True)
        if trial.state == TrialState.COMPLETE and study.best_trial.number == trial.number:
            write_best(study, arch, best_path, cfg, paths, sets, cells, run_dir)

    queued = before.count(TrialState.WAITING)
    print(f"study {study_name} ({arch}) in {mask_url(url)}: {existing - queued} trials so far"
          + (f" and {queued} queued" if queued else "") + "; adding "
          + (f"{n_trials} trials" if n_trials else "") + (" or " if n_trials and timeout else "")
          + (f"trials for {timeout:.0f} s" if timeout else ""), flush=True)
    if space.per_cell_pruning and len(cells) < 3:  # it needs two paired folds, and the last fold is never pruned
        print(f"note: the wilcoxon pruner compares folds; with {len(cells)} it never prunes (use 3 or more)", flush=True)
    objective = make_objective(cfg, arch, space, cells, data, assignment, run.study_dir(study_name), progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,), callbacks=[on_trial_end])
    trials = study.trials
    counts = {s: sum(t.state == getattr(TrialState, s.upper()) for t in trials)
              for s in ("complete", "pruned", "fail", "running", "waiting")}
    best = study.best_trial if counts["complete"] else None
    return Outcome(arch, study_name, url, counts, added[0], best.number if best else None, best.value if best else None,
                   dict(best.params) if best else {}, write_best(study, arch, best_path, cfg, paths, sets, cells, run_dir), cells,
                   empty_baseline(data, assignment, cells))

