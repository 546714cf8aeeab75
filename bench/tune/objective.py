"""The objective of a trial: its parameters laid over ``architectures.<arch>``, the chosen folds trained with the
real trainer, the mean validation TGS score of the kept checkpoint returned; curve or per-cell pruning on the way."""
from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import optuna

from bench import cost
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.config import Config
from bench.errors import summary
from bench.metrics import all_empty_scores
from bench.redact import mask_url
from bench.rundir import CHECKPOINT, METRICS, MODEL, Cell, CellRecord
from bench.rundir.paths import trial_name
from bench.tune.space import Space, arch_section, with_arch

TRIAL_DIR = "trial_dir"  # user attr; Optuna's retry callback copies it, so a retried trial resumes its cells
OBJECTIVE = "mean validation TGS score of the kept checkpoint"


class TrialFailed(RuntimeError):
    """A trial that cannot give a score (a diverged cell): Optuna marks it failed, the study goes on."""


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
            name = trial_name(trial.number)
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
