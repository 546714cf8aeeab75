"""What a command does before it trains: the part of the grid it was asked for, the data loaded and split as
the run directory records it, and the run directory's config and protocol written. Shared by ``salt-bench run``
(``bench.runner``) and ``salt-bench tune`` (``bench.tune.command``)."""
from __future__ import annotations

from bench.config import Config, protocol_dict, protocol_hash
from bench.data import source
from bench.data.partition import Partition, partition
from bench.errors import BenchError
from bench.rundir import METRICS, Cell, ProtocolRecord, RunConfig, RunDir


def prepare(cfg: Config, run: RunDir) -> None:
    """Write config.yaml and protocol.json, refusing a run directory made under another protocol."""
    run.path.mkdir(parents=True, exist_ok=True)
    run.remove_stale_temps()  # left by killed writers; their real files are intact or absent
    phash = protocol_hash(cfg)
    old = run.protocol_hash()
    if old is not None and old != phash:
        raise BenchError(
            f"{run.protocol_file}: this run directory holds protocol {old}, the config gives {phash}; "
            "cells of different protocols are never mixed: use a new --out"
        )
    for cell in run.done_cells():
        if run.cell_metrics(cell).protocol_hash != phash:
            raise BenchError(f"{run.cell_dir(cell) / METRICS}: cell was trained under another protocol than "
                             f"{phash}; use a new --out")
    merged = cfg.to_dict()
    previous = run.config_tree().get("architectures") or {}
    if not isinstance(previous, dict):
        raise BenchError(f"{run.config_file}: architectures: expected a mapping, got {type(previous).__name__}")
    merged["architectures"] = {**previous, **merged["architectures"]}
    RunConfig(merged).write(run.config_file)
    ProtocolRecord(phash, protocol_dict(cfg)).write(run.protocol_file)


def grid(cfg: Config, archs: list[str] | None = None, folds: list[int] | None = None) -> list[Cell]:
    """The config's grid, or the part of it ``--archs`` / ``--folds`` name (each checked against the config)."""
    names = list(cfg.architectures)
    for a in archs or []:
        if a not in names:
            raise BenchError(f"--archs: {a!r} is not in the config's architectures ({', '.join(names)})")
    for f in folds or []:
        if not 0 <= f < cfg.protocol.folds:
            raise BenchError(f"--folds: {f} is out of range for protocol.folds={cfg.protocol.folds}")
    return Cell.grid(archs or names, folds or range(cfg.protocol.folds), cfg.protocol.seeds)


def _check_apart(cfg: Config, run: RunDir) -> None:
    """A run directory never is, holds or lies inside the data folder: the run writes ``splits.json`` and
    ``ImageSets/`` (which would change the data) and the data must stay apart from what is derived from it."""
    data, out = source.location(cfg.data).resolve(), run.path.resolve()
    where = ("is" if out == data else "is inside" if data in out.parents else "contains" if out in data.parents
             else None)
    if where is not None:
        raise BenchError(f"{run.path}: the run directory {where} the data folder {data} (data.source); "
                         "use an --out apart from the data")


def load_data(cfg: Config, run: RunDir) -> Partition:
    """The configured data split into development folds and holdout, reloaded from (or first recorded in)
    the run's ``splits.json`` and ``holdout.json``. Nothing is written, and no run directory made, before the
    data has loaded and been split, so a bad data folder or config leaves the run directory as it was."""
    _check_apart(cfg, run)
    return partition(cfg, run.splits_file, run.holdout_file)
