"""benchmarks/gpu_bench.py --smoke runs end to end on the CPU and prints its three tables and a finite estimate."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

from bench import config

ROOT = Path(__file__).resolve().parents[1]
TRAINING_HEADERS = ["arch", "stage", "epoch", "batch", "harness_img/s", "step_img/s", "bare_img/s", "harness/bare", "step/bare",
                    "aten_ops/step", "gpu_busy", "syncs/step", "bare_syncs/step", "cuda_syncs/step", "peak_MiB"]
ARCH_HEADERS = ["arch", "params_M", "ckpt_ms", "ckpt_MiB", "val_ms/img", "oof_ms/img"]
GRID_HEADERS = ["arch", "cells", "steps/epoch", "epochs_first", "epochs_then", "train_s", "val_s", "ckpt_s", "oof_s", "ckpt_%",
                "cell_min", "arch_h"]


def _table(lines: list[str], title: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows under the line starting with ``title``: rows run while they have one cell per column."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    header = lines[start + 1].split()
    rows = []
    for line in lines[start + 2:]:
        cells = line.split()
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells)))
    return header, rows


def test_smoke_prints_one_row_per_arch_and_stage_and_a_finite_estimate() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()

    cfg = config.load([config.CONFIG_DIR / "quick.yaml"])
    archs = list(cfg.architectures)[:2]
    stages = ["first"] + (["then"] if cfg.protocol.loss.then is not None else [])

    header, rows = _table(lines, "Training step")
    assert header == TRAINING_HEADERS
    assert sorted((r["arch"], r["stage"]) for r in rows) == sorted((a, s) for a in archs for s in stages)
    for r in rows:
        for column in ("harness_img/s", "step_img/s", "bare_img/s", "aten_ops/step"):
            assert float(r[column]) > 0, (r["arch"], r["stage"], column)
        assert r["gpu_busy"] == "n/a" and r["peak_MiB"] == "n/a"  # CPU: no GPU fraction, no CUDA memory
        assert float(r["syncs/step"]) >= float(r["bare_syncs/step"]) >= 0

    header, per_arch = _table(lines, "Per architecture")
    assert header == ARCH_HEADERS
    assert [r["arch"] for r in per_arch] == archs
    assert all(float(r[c]) > 0 for r in per_arch for c in ARCH_HEADERS[1:])

    header, grid = _table(lines, "Grid estimate")
    assert header == GRID_HEADERS
    assert [r["arch"] for r in grid] == archs + ["TOTAL"]
    assert all(math.isfinite(float(r["arch_h"])) and float(r["arch_h"]) > 0 for r in grid)
    match = re.search(r"^grid estimate: ([0-9.]+) h serial, ([0-9.]+) h with (\d+) worker", done.stdout, re.M)
    assert match, done.stdout[-2000:]
    serial, parallel, workers = float(match[1]), float(match[2]), int(match[3])
    assert math.isfinite(serial) and serial > 0 and math.isclose(parallel, serial / workers, rel_tol=0.02, abs_tol=0.01)
