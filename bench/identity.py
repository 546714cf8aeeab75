"""What makes a cell's result what it is, hashed: the per-cell identity.

Besides the shared protocol, a cell's numbers depend on its architecture's model options and training
recipe, on the device type and arithmetic (``runtime.precision``; fused AdamW on CUDA), on
the kernels chosen (``runtime.deterministic``, ``runtime.compile``), on the libraries and on the project's
own code. All of it goes into ``cell_hash``, recorded in ``metrics.json`` and ``checkpoint.pt``: a
checkpoint of another identity is never continued, and a leaderboard over cells of different environments
is refused unless asked for.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.config import ArchPlan
from bench.runtime import arithmetic

#: identity keys that describe where and with what a cell ran (not what it is); a leaderboard needs them equal
ENVIRONMENT_KEYS = ("device_type", "dtype", "deterministic", "compile", "torch", "smp", "timm", "code")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The project's git commit, ``+dirty`` when tracked files differ from it; the package version outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=root)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "bench", "architectures"],
                                capture_output=True, text=True, timeout=5, cwd=root)
    except (OSError, subprocess.TimeoutExpired):
        head = status = None
    if head is None or head.returncode != 0 or not head.stdout.strip():
        try:
            return f"salt-bench {metadata.version('salt-bench')}"
        except metadata.PackageNotFoundError:
            return "unknown"
    return head.stdout.strip()[:12] + ("+dirty" if status is not None and status.stdout.strip() else "")


def cell_identity(plan: ArchPlan, device: torch.device) -> dict[str, Any]:
    import segmentation_models_pytorch as smp
    import timm

    return {
        "protocol_hash": plan.protocol_hash, "arch": plan.arch, "model": plan.model,
        "recipe": dataclasses.asdict(plan.recipe), "epochs": plan.protocol.epochs,  # per architecture under a budget
        "device_type": device.type, "dtype": arithmetic(plan.runtime, device),
        "deterministic": plan.runtime.deterministic, "compile": plan.runtime.compile_mode,
        "torch": torch.__version__, "smp": smp.__version__, "timm": timm.__version__, "code": code_version(),
    }


def environment(identity: dict[str, Any]) -> dict[str, Any]:
    """The ``ENVIRONMENT_KEYS`` of a cell identity: where and with what the cell ran."""
    return {k: identity.get(k) for k in ENVIRONMENT_KEYS}


def cell_hash(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
