"""``salt-bench tune``: the config, the space and the data loaded once, then one study per architecture."""
from __future__ import annotations

import sys
from pathlib import Path

import optuna

from bench import config as bconfig
from bench import prepare, runtime
from bench.cell.data import DeviceData
from bench.config import protocol_hash
from bench.errors import BenchError
from bench.rundir import RunDir
from bench.tune.output import Outcome, format_outcome
from bench.tune.space import DEFAULT_SPACE, load_space
from bench.tune.storage import open_storage
from bench.tune.study import tune_arch


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
    prepare.grid(cfg, archs, folds)  # check --folds before any work
    store = open_storage(storage, space) if storage else None  # a bad one fails before the run directory is made
    run = RunDir(out or runtime.default_run_dir(cfg))
    device = runtime.setup(cfg)
    partition = prepare.load_data(cfg, run)
    cfg, dev = partition.cfg, partition.development  # the development set only: tuning never sees the holdout
    prepare.prepare(cfg, run)
    data = DeviceData.from_arrays([str(i) for i in dev.ids], dev.images, dev.masks, device)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
    print(f"salt-bench tune: protocol {protocol_hash(cfg)}, space {space.path}, "
          f"{space.pruner['name']} pruner, on {device}; run directory {run}")
    outcomes = []
    for arch in archs:
        name = f"{study}-{arch}" if study and every else study
        o = tune_arch(cfg, arch, space, run_dir=run.path, data=data, assignment=dev.folds, folds=folds,
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
