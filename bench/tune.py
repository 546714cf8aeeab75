"""`salt-bench tune`: one Optuna study per architecture, resumable, on the benchmark's own protocol.

A trial lays its parameters over ``architectures.<arch>`` of the config (the only part allowed to
differ per architecture, so the protocol hash is unchanged), trains the chosen folds with the real
trainer and returns the mean validation TGS score of the kept checkpoint (the one the leaderboard
scores); tuning never reads the holdout, so a tuned architecture's holdout score is still unbiased.
``--all`` gives every architecture the
same space, budget and sampler seed. The best trial's section is written as ``<study>.best.yaml``,
a config layer that ``salt-bench run --config ... --config <study>.best.yaml`` uses as it is.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from bench import atomic, cost, runner, runtime
from bench import config as bconfig
from bench.config import Config, protocol_hash
from bench.errors import BenchError, summary
from bench.metrics import all_empty_scores
from bench.progress import trial_progress
from bench.redact import mask_url
from bench.rundir import CHECKPOINT, METRICS, MODEL, Cell, CellRecord, RunDir
from bench.train import DeviceData, train_cell
from bench.tune_space import DEFAULT_SPACE, Space, arch_section, load_space, with_arch

TRIAL_DIR = "trial_dir"  # user attr; Optuna's retry callback copies it, so a retried trial resumes its cells
OBJECTIVE = "mean validation TGS score of the kept checkpoint"


class TrialFailed(RuntimeError):
    """A trial that cannot give a score (a diverged cell): Optuna marks it failed, the study goes on."""


def open_storage(url: str, space: Space) -> optuna.storages.BaseStorage:
    """``journal://PATH`` is a journal file (several processes on one machine); anything else is an RDB
    URL (sqlite, postgresql, ...) with heartbeats, so a dead worker's trial is failed and re-queued."""
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as exc:  # its file name is the URL's: masked like the URL
            raise BenchError(f"--storage {mask_url(url)}: cannot open ({exc.strerror or mask_url(summary(exc))})") from None
        return optuna.storages.JournalStorage(backend)
    hb = space.heartbeat
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=hb["interval"], grace_period=hb["grace_period"],
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=hb["max_retry"]),
            )
    except Exception as exc:  # sqlalchemy raises many types (bad URL, missing driver, refused connection)
        raise BenchError(f"--storage {mask_url(url)}: cannot open ({mask_url(summary(exc))})") from None


def _signature(cfg: Config, arch: str, cells: list[Cell]) -> dict[str, Any]:
    """What makes trials of one study comparable; a resumed study must match it."""
    sig = {"arch": arch, "protocol_hash": protocol_hash(cfg), "arch_config": cfg.architectures.get(arch) or {},
           "cells": [[c.fold, c.seed] for c in cells], "objective": OBJECTIVE}
    return json.loads(json.dumps(sig))


def _check_study(study: optuna.Study, sig: dict[str, Any], where: str) -> None:
    old = study.user_attrs.get("salt_bench")
    if old is None:
        study.set_user_attr("salt_bench", sig)
        return
    for key in ("arch", "protocol_hash", "arch_config", "cells"):
        if old.get(key) != sig[key]:
            raise BenchError(f"{where}: study {study.study_name!r} was tuned with {key}={old.get(key)}, this command "
                             f"gives {sig[key]}; trials would not be comparable: use another --study")


def empty_baseline(data: DeviceData, assignment: np.ndarray, cells: list[Cell]) -> float:
    """The objective of predicting no salt anywhere (the TGS score of an empty mask is 1 on empty truths,
    0 otherwise): a degenerate model scores this, and a short protocol's learners may not beat it."""
    masks = data.masks[:, 0].cpu().numpy()
    return float(np.mean([all_empty_scores(masks[assignment == c.fold]).mean() for c in cells]))


def _drop_weights(trial_dir: Path) -> None:
    """A trial keeps its metrics, history and out-of-fold predictions, not its weights (re-run the best)."""
    for name in (MODEL, CHECKPOINT):
        for path in trial_dir.glob(f"*/{name}"):
            path.unlink(missing_ok=True)


def _reporter(trial: optuna.Trial, index: int, cells: list[Cell], done: float, epochs: int) -> Callable[[int, float], None]:
    """``on_epoch`` for curve pruners: reports the objective so far (unfinished cells count 0), which
    never decreases within a trial and is comparable across trials at the same step. The last step is
    reported, never pruned: the work is done, and a complete trial tells the sampler more."""
    best = [0.0]
    cell = cells[index]
    last = len(cells) * epochs - 1

    def on_epoch(epoch: int, score: float) -> None:
        best[0] = max(best[0], score)
        step = index * epochs + epoch
        value = (done + best[0]) / len(cells)
        trial.report(value, step)
        if step < last and trial.should_prune():
            raise optuna.TrialPruned(f"at {cell.name} epoch {epoch} (step {step}): objective so far {value:.4f}")

    return on_epoch


def _train_trial(trial: optuna.Trial, cfg: Config, arch: str, space: Space, cells: list[Cell], data: DeviceData,
                 assignment: np.ndarray, trial_dir: Path, progress: bool) -> float:
    params = space.suggest(trial, arch)
    section = arch_section(cfg, arch, params)
    trial.set_user_attr("architectures", {arch: json.loads(json.dumps(section))})
    trial_cfg = cost.rederive(with_arch(cfg, arch, section, f"trial {trial.number}"), arch, len(data.ids))
    plan = trial_cfg.plan(arch)
    scores: list[float] = []
    for index, cell in enumerate(cells):
        out = trial_dir / cell.name
        if (out / METRICS).is_file():  # a retried trial keeps the cells its first attempt finished
            metrics = CellRecord.read(out / METRICS)
        else:
            on_epoch = None if space.per_cell_pruning else _reporter(trial, index, cells, sum(scores), plan.protocol.epochs)
            metrics = train_cell(plan, cell, data, assignment, out, on_epoch=on_epoch, progress=progress)
        if metrics.status != "ok":
            raise TrialFailed(f"{cell.name} {metrics.status}: {metrics.stop_reason}")
        scores.append(metrics.val_score)
        trial.set_user_attr("cell_scores", {c.name: s for c, s in zip(cells, scores)})
        if space.per_cell_pruning:
            trial.report(scores[-1], index)
            if index < len(cells) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"after {cell.name} (step {index}): {cell.name} scored {scores[-1]:.4f}")
    return float(np.mean(scores))


def make_objective(cfg: Config, arch: str, space: Space, cells: list[Cell], data: DeviceData, assignment: np.ndarray,
                   study_dir: Path, progress: bool = False) -> Callable[[optuna.Trial], float]:
    """The objective; pruned and failed trials record why in user attrs ``prune_reason`` / ``fail_reason``."""

    def objective(trial: optuna.Trial) -> float:
        name = trial.user_attrs.get(TRIAL_DIR)
        if name is None:  # a fresh trial: a folder of that name can only be left by a deleted study
            name = f"trial-{trial.number}"
            shutil.rmtree(study_dir / name, ignore_errors=True)
            trial.set_user_attr(TRIAL_DIR, name)
        trial_dir = study_dir / name
        try:
            return _train_trial(trial, cfg, arch, space, cells, data, assignment, trial_dir, progress)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("prune_reason", str(exc))
            raise
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", mask_url(summary(exc)))
            trial.set_user_attr("fail_traceback", mask_url(traceback.format_exc()[-4000:]))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        finally:
            _drop_weights(trial_dir)

    return objective


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


def tune_arch(cfg: Config, arch: str, space: Space, *, run_dir: Path, data: DeviceData, assignment: np.ndarray,
              folds: list[int] | None, n_trials: int | None, timeout: float | None, storage: str | None = None,
              study_name: str | None = None, config_paths: list[str] | None = None, overrides: list[str] | None = None,
              progress: bool = False, store: optuna.storages.BaseStorage | None = None) -> Outcome:
    """Create or resume the study of ``arch`` and add ``n_trials`` trials (or run for ``timeout`` seconds).

    ``store`` is ``storage`` already opened (``open_storage``), so that several studies share one connection."""
    study_name = study_name or f"tune-{arch}"
    tuning = RunDir(run_dir).tuning_dir
    tuning.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(tuning / f'{study_name}.db').resolve()}"
    cells = runner.grid(cfg, [arch], folds)
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
    _check_study(study, _signature(cfg, arch, cells), mask_url(url))
    best_path = tuning / f"{study_name}.best.yaml"
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
    objective = make_objective(cfg, arch, space, cells, data, assignment, tuning / study_name, progress)
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


def _space_path(arg: str | None) -> Path:
    """The space file; the CLI's relative default also resolves from outside the project folder."""
    if arg is None:
        return DEFAULT_SPACE
    path = Path(arg)
    in_project = bconfig.CONFIG_DIR.parent / path
    return in_project if not path.is_absolute() and not path.exists() and in_project.is_file() else path


def tune(config_paths: list[str] | None, overrides: list[str], *, archs: list[str] | None, n_trials: int | None,
         timeout: float | None, space_path: str | None = None, storage: str | None = None, study: str | None = None,
         folds: list[int] | None = None, out: Path | None = None) -> list[Outcome]:
    """``salt-bench tune``: one study per architecture in ``archs`` (None: every architecture of the config)."""
    if study is not None:
        bconfig.check_name(study, "--study")
    paths = runtime.config_paths(config_paths, "tune")
    cfg = bconfig.load(paths, overrides)
    every = archs is None
    archs = list(cfg.architectures) if every else archs
    for arch in archs:
        if arch not in cfg.architectures:
            raise BenchError(f"--arch: {arch!r} is not in the config's architectures ({', '.join(cfg.architectures)})")
    if n_trials is None and timeout is None:
        raise BenchError("give a budget: --n-trials N (trials added by this command) and/or --timeout SECONDS")
    if every and timeout is not None:
        raise BenchError("--timeout with --all: a time budget gives slow architectures fewer trials; "
                         "use --n-trials for equal budgets")
    folds = [0] if folds is None else folds
    space = load_space(_space_path(space_path), cfg, archs)
    runner.grid(cfg, archs, folds)  # check --folds before any work
    store = open_storage(storage, space) if storage else None  # a bad one fails before the run directory is made
    run = RunDir(out or runtime.default_run_dir(cfg))
    device = runtime.setup(cfg)
    raw = runner.load_data(cfg, run)  # the development set only: tuning never sees the holdout
    cfg, assignment = raw.cfg, raw.folds
    runner.prepare(cfg, run)
    data = DeviceData.from_arrays(raw.ids, raw.images, raw.masks, device)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
    print(f"salt-bench tune: protocol {protocol_hash(cfg)}, space {space.path}, "
          f"{space.pruner['name']} pruner, on {device}; run directory {run}")
    outcomes = []
    for arch in archs:
        name = f"{study}-{arch}" if study and every else study
        o = tune_arch(cfg, arch, space, run_dir=run.path, data=data, assignment=assignment, folds=folds,
                      n_trials=n_trials, timeout=timeout, storage=storage, study_name=name,
                      config_paths=paths, overrides=overrides, progress=sys.stderr.isatty(), store=store)
        print(format_outcome(o) + "\n", flush=True)
        outcomes.append(o)
    if len(outcomes) > 1:
        print(f"{'arch':<14} {'trials':>6} {'complete':>8} {'pruned':>6} {'failed':>6} {'best':>7}  best config")
        for o in outcomes:
            best = f"{o.best_value:.4f}" if o.best_value is not None else "-"
            print(f"{o.arch:<14} {sum(o.counts.values()):>6} {o.counts['complete']:>8} {o.counts['pruned']:>6} "
                  f"{o.counts['fail']:>6} {best:>7}  {o.best_yaml or '-'}")
    return outcomes
