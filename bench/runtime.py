"""How and where this process runs: the device, the CPU threads, the default config, the environment record.

The runner, the executors, tuning and prediction all ask here, so a choice such as "benchmark.yaml on a
GPU, the CPU profile otherwise" is made in one place.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import architectures
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


def auto_workers(cuda_memory: int | None) -> int:
    """The default worker count for a CUDA GPU of ``cuda_memory`` bytes (None: no GPU): 4 from 40 GB on (one
    101 px model cannot fill such a GPU), else 1."""
    return 4 if cuda_memory is not None and cuda_memory >= 40 * 2**30 else 1


def workers(runtime: RuntimeConfig) -> int:
    """Local worker processes: as configured, else ``auto_workers`` of the training device."""
    if runtime.workers is not None:
        return runtime.workers
    device = pick_device(runtime)
    return auto_workers(torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None)


def for_workers(cfg: Config, workers: int) -> Config:
    """``cfg`` as each of ``workers`` local worker processes runs it: this machine's cores shared among them
    (``runtime.threads``, unless the config sets it), so that the workers do not oversubscribe the CPU."""
    if cfg.runtime.threads is not None:
        return cfg
    threads = max(1, (os.cpu_count() or 1) // workers)
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, threads=threads))


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for reproducible results (CUDA's reproducibility notes)


def _cuda_used() -> bool:
    """Whether this process has put anything on a GPU: a cuBLAS call needs tensors there, so without any it cannot
    have run (starting CUDA to ask for the device's name or memory allocates nothing)."""
    return torch.cuda.is_initialized() and any(
        torch.cuda.memory_stats(i).get("allocation.all.allocated", 0) for i in range(torch.cuda.device_count()))


def set_determinism(deterministic: bool) -> None:
    """Make CUDA kernels reproducible on one GPU type, or let them be fast.

    Deterministic: cuDNN picks deterministic algorithms without autotuning, torch uses the deterministic
    implementation of every op that has one and raises on any op that has none (``warn_only=False``: the models
    run none, see ``deterministic_kernels``, and an op that slipped through stops the run rather than silently
    making it irreproducible), and cuBLAS gets a fixed workspace. torch reads ``CUBLAS_WORKSPACE_CONFIG`` at its
    first cuBLAS call, so this runs before anything computes on the GPU; spawned workers inherit it from the
    environment and call ``setup`` themselves. ``fill_uninitialized_memory`` is off: it fills every new
    uninitialised tensor (a kernel per ``empty``) so that reading one is reproducible, and the harness reads none
    before writing it. Not deterministic: cuDNN autotunes (the training shapes are static). On the CPU these
    flags change nothing the harness runs.
    """
    if deterministic:
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and _cuda_used():
            print("runtime.deterministic: tensors were on the GPU before CUBLAS_WORKSPACE_CONFIG was set; if cuBLAS "
                  "ran on them, its results are not reproducible in this process")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = not deterministic


def deterministic_kernels(deterministic: bool, device: torch.device) -> bool:
    """Whether models (``architectures.make_deterministic``) and the loss's resize (``inference.from_network``) use
    fixed-matrix products for bilinear interpolation and adaptive average pooling: under ``runtime.deterministic``
    on CUDA, where torch's backward of both has no deterministic kernel. On the CPU torch's kernels are
    deterministic already and the products would round differently, so CPU results stay those of the library."""
    return deterministic and device.type == "cuda"


def prepare_model(model: nn.Module, device: torch.device, deterministic: bool) -> nn.Module:
    """``model`` as training and prediction run it: on ``device`` in channels_last (the fast layout of cuDNN and
    of oneDNN on CPU: 1.25x on the quick profile), with deterministic kernels where ``deterministic_kernels`` says.
    Prediction uses the same, so it runs the kernels training ran."""
    if deterministic_kernels(deterministic, device):
        architectures.make_deterministic(model)
    return model.to(device, memory_format=torch.channels_last)


def determinism() -> dict[str, Any]:
    """The reproducibility settings in force in this process (``env.json``)."""
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "fill_uninitialized_memory": torch.utils.deterministic.fill_uninitialized_memory,
            "cudnn_deterministic": torch.backends.cudnn.deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX): elsewhere CPU bf16 is emulated, and slower.

    oneDNN's own "bf16 supported" is true on every AVX-512 CPU (it emulates bf16 there, 1.67x slower than fp32 on
    a 2-core Xeon without avx512_bf16), so the instruction set is asked directly.
    """
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


#: what ``runtime.precision: auto`` means per device type (float32 on any other)
AUTO_ARITHMETIC = {"cuda": "bfloat16", "cpu": "float32"}


def arithmetic(runtime: RuntimeConfig, device: torch.device, *, announce: bool = False) -> str:
    """The dtype training and prediction compute in on ``device`` under ``runtime.precision``: "bfloat16"
    (``bench.inference.autocast``) or "float32"; the cell identity records it.

    bfloat16 on a CPU without native bf16 would train several times slower, not faster: float32 is used there,
    said in one line where ``announce`` (once per process, where the runtime is set up).
    """
    if runtime.precision == "auto":
        return AUTO_ARITHMETIC.get(device.type, "float32")
    if runtime.precision == "bfloat16" and device.type == "cpu" and not native_bf16():
        if announce:
            print("runtime.precision: this CPU has no native bf16 (avx512_bf16/AMX): training in float32 instead")
        return "float32"
    return runtime.precision


def setup(cfg: Config) -> torch.device:
    """Apply the config's runtime section to this process and return the training device."""
    set_determinism(cfg.runtime.deterministic)
    device = pick_device(cfg.runtime)
    set_threads(cfg.runtime)
    arithmetic(cfg.runtime, device, announce=True)
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


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's model name: results in reduced precision differ between models, so runs name theirs."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model, which decides CPU kernels and so bf16 results (``platform.processor()`` is empty on Linux)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(runtime: RuntimeConfig, device: torch.device) -> dict[str, Any]:
    """What ran the benchmark: versions, device, threads, arithmetic, commit and time (``env.json``)."""
    import optuna
    import segmentation_models_pytorch as smp
    import timm

    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "smp": smp.__version__, "timm": timm.__version__, "optuna": optuna.__version__,
        "numpy": np.__version__, "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(), "precision": arithmetic(runtime, device), "git_commit": git_commit(),
        "determinism": determinism(),
    }
