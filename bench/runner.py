"""The grid of cells (architectures x folds x seeds) under one protocol: prepare, resume, execute, aggregate.

A run directory holds exactly one protocol (its hash is in ``protocol.json`` and in every cell); running
again with the same config resumes: finished cells (with ``metrics.json``) are skipped.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bench import config as bconfig
from bench import io as bio
from bench import results
from bench.config import Config, protocol_dict, protocol_hash
from bench.data import folds as bfolds
from bench.data import source
from bench.data.tgs import TGSData
from bench.errors import BenchError
from bench.executors import EXECUTORS, execute_local, execute_ray
from bench.train import Cell, DeviceData, train_cell


def pick_device(cfg: Config) -> torch.device:
    if cfg.runtime.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("runtime.device: cuda was asked for but no CUDA device is available")
    if cfg.runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.runtime.device)


def default_config_path() -> tuple[Path, str]:
    """benchmark.yaml on a GPU, quick.yaml (the CPU profile) otherwise, with the sentence saying so."""
    if torch.cuda.is_available():
        return bconfig.CONFIG_DIR / "benchmark.yaml", f"CUDA device found ({torch.cuda.get_device_name(0)}): using configs/benchmark.yaml"
    return bconfig.CONFIG_DIR / "quick.yaml", "no CUDA device: using the CPU profile configs/quick.yaml"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    import optuna
    import segmentation_models_pytorch as smp
    import timm

    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "smp": smp.__version__, "timm": timm.__version__, "optuna": optuna.__version__,
        "numpy": np.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "git_commit": _git_commit(),
    }


def prepare(cfg: Config, run_dir: Path) -> None:
    """Write config.yaml and protocol.json, refusing a run directory made under another protocol."""
    run_dir.mkdir(parents=True, exist_ok=True)
    bio.remove_stale_temps(run_dir)  # left by killed writers; their real files are intact or absent
    phash = protocol_hash(cfg)
    proto_path = run_dir / "protocol.json"
    if proto_path.is_file():
        old = bio.read_json(proto_path).get("hash")
        if old != phash:
            raise BenchError(
                f"{proto_path}: this run directory holds protocol {old}, the config gives {phash}; "
                "cells of different protocols are never mixed: use a new --out"
            )
    for metrics in run_dir.glob("cells/*/fold*-seed*/metrics.json"):
        if bio.read_json(metrics).get("protocol_hash") != phash:
            raise BenchError(f"{metrics}: cell was trained under another protocol than {phash}; use a new --out")
    config_path = run_dir / "config.yaml"
    merged = cfg.to_dict()
    if config_path.is_file():
        previous = yaml.safe_load(config_path.read_text()) or {}
        merged["architectures"] = {**(previous.get("architectures") or {}), **merged["architectures"]}
    bio.write_text(config_path, yaml.safe_dump(merged, sort_keys=False))
    bio.write_json(proto_path, {"hash": phash, "protocol": protocol_dict(cfg)})


def grid(cfg: Config, archs: list[str] | None = None, folds: list[int] | None = None) -> list[Cell]:
    names = list(cfg.architectures)
    for a in archs or []:
        if a not in names:
            raise BenchError(f"--archs: {a!r} is not in the config's architectures ({', '.join(names)})")
    for f in folds or []:
        if not 0 <= f < cfg.protocol.folds:
            raise BenchError(f"--folds: {f} is out of range for protocol.folds={cfg.protocol.folds}")
    return [Cell(a, f, s) for s in cfg.protocol.seeds for f in (folds or range(cfg.protocol.folds))
            for a in (archs or names)]


def _check_cell_settings(cfg: Config, cell: Cell, run_dir: Path) -> None:
    done = bio.read_json(cell.dir(run_dir) / "metrics.json")
    then = {**done["arch_kwargs"], "train": done.get("arch_train", {})}
    now = {**cfg.arch_kwargs(cell.arch), "train": cfg.arch_train(cell.arch)}
    if then != now:
        raise BenchError(
            f"{cell.dir(run_dir) / 'metrics.json'}: {cell.arch} was trained with {then}, "
            f"the config now says {now}; use a new --out"
        )


def load_data(cfg: Config, run_dir: Path) -> tuple[TGSData, np.ndarray]:
    """The configured dataset and its folds, reloaded from (or first saved to) the run's ``splits.json``."""
    data = source.load(cfg.data)
    assignment = bfolds.load_or_make_splits(run_dir / "splits.json", data.ids, data.masks,
                                            k=cfg.protocol.folds, seed=cfg.protocol.fold_seed)
    return data, assignment


def run(cfg: Config, run_dir: Path, *, archs: list[str] | None = None, folds: list[int] | None = None,
        progress: bool = True, executor: str = "local", ray_options: dict[str, Any] | None = None) -> Any:
    """Train every pending cell of the grid, then aggregate the run directory. Returns the leaderboard.

    ``executor="ray"`` sends the cells to Ray workers (``ray_options`` go to ``executors.execute_ray``);
    they pick their own devices, so the driver needs none.
    """
    run_dir = Path(run_dir)
    if executor not in EXECUTORS:
        raise BenchError(f"executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    device = pick_device(cfg) if executor == "local" else None
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    cells = grid(cfg, archs, folds)
    prepare(cfg, run_dir)
    data, assignment = load_data(cfg, run_dir)
    if not (run_dir / "data.npz").is_file():
        results.save_data(run_dir, data.ids, data.images, data.masks, assignment)
    bfolds.export_imagesets(data.ids, assignment, run_dir / "ImageSets")
    env = environment(device or torch.device("cpu"))
    if device is None:
        env.update(executor=executor, device=executor, device_name="Ray workers (each cell's metrics.json has its device)")
    bio.write_json(run_dir / "env.json", env)
    pending = []
    for cell in cells:
        if cell.is_done(run_dir):
            _check_cell_settings(cfg, cell, run_dir)
        else:
            pending.append(cell)
    print(f"{run_dir}: protocol {protocol_hash(cfg)}, {len(cells)} cells, {len(cells) - len(pending)} already done, "
          f"{len(pending)} to train on {device or executor}")
    if pending and executor == "ray":
        execute_ray(pending, cfg, run_dir, progress=progress, **(ray_options or {}))
    elif pending:
        device_data = DeviceData.from_arrays(data.ids, data.images, data.masks, device)
        execute_local(pending, lambda c: train_cell(cfg, c, device_data, assignment, c.dir(run_dir), progress=progress),
                      progress=progress)
    board, _ = results.aggregate(run_dir)
    return board


def main(args: argparse.Namespace) -> None:
    paths = args.config
    if not paths:
        path, sentence = default_config_path()
        print(f"salt-bench run: {sentence}")
        paths = [path]
    else:
        print(f"salt-bench run: config {' + '.join(paths)}")
    cfg = bconfig.load(paths, args.overrides)
    run_dir = Path(args.out or Path("runs") / cfg.name)
    t0 = time.perf_counter()
    ray_options = {"address": args.ray_address, "gpus_per_cell": args.gpus_per_cell, "cpus_per_cell": args.cpus_per_cell}
    board = run(cfg, run_dir, archs=args.archs, folds=args.folds, progress=True, executor=args.executor,
                ray_options=ray_options)
    print(f"\nleaderboard ({run_dir / 'leaderboard.csv'}), pooled out-of-fold TGS score at the OOF-chosen threshold:")
    print(results.format_leaderboard(board, results.all_empty_baseline(run_dir)))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    if not args.no_report:
        from bench.report import build

        print(f"report: {build.build_report(run_dir)}")
