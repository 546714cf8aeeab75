"""How and where this process runs: the device, the CPU threads, the default config, the environment record.

The runner, the executors, tuning and prediction all ask here, so a choice such as "benchmark.yaml on a
GPU, the CPU profile otherwise" is made in one place.
"""
from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.config import CONFIG_DIR, Config, RuntimeConfig
from bench.errors import BenchError


def pick_device(runtime: RuntimeConfig) -> torch.device:
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("runtime.device: cuda was asked for but no CUDA device is available")
    if runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(runtime.device)


def set_threads(runtime: RuntimeConfig) -> None:
    if runtime.threads:
        torch.set_num_threads(runtime.threads)


def workers(runtime: RuntimeConfig) -> int:
    """Local worker processes: as configured, else 4 on a CUDA GPU of >= 40 GB (one 101 px model cannot fill
    it), else 1."""
    if runtime.workers is not None:
        return runtime.workers
    device = pick_device(runtime)
    if device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory >= 40 * 2**30:
        return 4
    return 1


def setup(cfg: Config) -> torch.device:
    """Apply the config's runtime section to this process and return the training device."""
    device = pick_device(cfg.runtime)
    set_threads(cfg.runtime)
    return device


def default_config_path() -> tuple[Path, str]:
    """benchmark.yaml on a GPU, quick.yaml (the CPU profile) otherwise, with the sentence saying so."""
    if torch.cuda.is_available():
        return CONFIG_DIR / "benchmark.yaml", f"CUDA device found ({torch.cuda.get_device_name(0)}): using configs/benchmark.yaml"
    return CONFIG_DIR / "quick.yaml", "no CUDA device: using the CPU profile configs/quick.yaml"


def config_paths(given: list[str] | None, command: str) -> list[str]:
    """The config files a command uses: those given, else the default for this machine (said on stdout)."""
    if given:
        print(f"salt-bench {command}: config {' + '.join(given)}")
        return list(given)
    path, sentence = default_config_path()
    print(f"salt-bench {command}: {sentence}")
    return [str(path)]


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.name


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    """What ran the benchmark: versions, device, threads, commit and time (``env.json``)."""
    import optuna
    import segmentation_models_pytorch as smp
    import timm

    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "smp": smp.__version__, "timm": timm.__version__, "optuna": optuna.__version__,
        "numpy": np.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "git_commit": git_commit(),
    }
