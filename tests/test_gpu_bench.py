"""benchmarks/gpu_bench.py --smoke runs end to end on the CPU and prints its tables: the measured step, checkpoint and
grid, compile, determinism (bit-identical on the CPU), and the op-count estimate of benchmark.yaml; the counts it
scales are exact."""
from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

from bench import config

ROOT = Path(__file__).resolve().parents[1]
TRAINING_HEADERS = ["arch", "stage", "epoch", "batch", "harness_img/s", "step_img/s", "bare_img/s", "harness/bare", "step/bare",
                    "aten_ops/step", "gpu_busy", "syncs/step", "bare_syncs/step", "cuda_syncs/step", "peak_MiB",
                    "TFLOP/s"]
ARCH_HEADERS = ["arch", "params_M", "snapshot_ms", "write_ms", "ckpt_MiB", "val_ms/img", "oof_ms/img"]
GRID_HEADERS = ["arch", "cells", "steps/epoch", "epochs_first", "epochs_then", "train_s", "val_s", "ckpt_s", "oof_s", "ckpt_%",
                "cell_min", "arch_h"]
COMPILE_HEADERS = ["arch", "compile", "first_step_s", "harness_img/s", "speedup"]
DETERMINISM_HEADERS = ["arch", "deterministic", "result", "steps/s"]
COUNT_HEADERS = ["arch", "params_M", "train_GFLOP/img", "infer_GFLOP/img", "ops/step_first", "ops/step_then",
                 "cuda_ops/step_first", "cuda_ops/step_then", "cuda_ops/predict", "state_MiB"]
OP_GRID_HEADERS = ["scenario", "device_min", "host_min", "holdout_min", "total_min", "per_seed_min"]


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
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()

    cfg = config.load([config.CONFIG_DIR / "quick.yaml"])
    archs = list(cfg.architectures)[:2]
    stages = ["first"] + (["then"] if cfg.protocol.loss.then is not None else [])

    header, rows = _table(lines, "Training step")
    assert header == TRAINING_HEADERS
    assert sorted((r["arch"], r["stage"]) for r in rows) == sorted((a, s) for a in archs for s in stages)
    for r in rows:
        for column in ("harness_img/s", "step_img/s", "bare_img/s", "aten_ops/step", "TFLOP/s"):
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

    header, compiled = _table(lines, "Compile")
    assert header == COMPILE_HEADERS
    assert [(r["arch"], r["compile"]) for r in compiled] == [(archs[0], "false")] and float(compiled[0]["harness_img/s"]) > 0
    assert any(line.startswith("compile default and reduce-overhead: not measured on the CPU") for line in lines)

    header, determinism = _table(lines, "Determinism")
    assert header == DETERMINISM_HEADERS
    expected = sorted((a, d) for a in archs for d in ("true", "false"))
    assert sorted((r["arch"], r["deterministic"]) for r in determinism) == expected
    assert all(r["result"] == "identical" and float(r["steps/s"]) > 0 for r in determinism)  # the CPU is deterministic

    header, counted = _table(lines, "Counted on the CPU")
    assert header == COUNT_HEADERS
    assert [r["arch"] for r in counted] == archs
    for r in counted:
        assert all(float(r[c]) > 0 for c in COUNT_HEADERS[1:])
        assert int(r["cuda_ops/step_first"]) < int(r["ops/step_first"])  # fused AdamW: not one op per parameter
    assert any(line.startswith("  tflops: ") for line in lines) and any(line.startswith("  us_per_op: ") for line in lines)
    header, op_grid = _table(lines, "Grid on one GPU")
    assert header == OP_GRID_HEADERS and [r["scenario"] for r in op_grid] == ["low", "mid", "high"]
    totals = [float(r["total_min"]) for r in op_grid]
    assert 0 < totals[0] <= totals[1] <= totals[2] and all(map(math.isfinite, totals))
    match = re.search(r"^op-count estimate \(an ESTIMATE .*benchmark\.yaml.*: ([0-9.]+) min \(low ([0-9.]+), high ([0-9.]+)\) "
                      r"for (\d+) cells; per seed", done.stdout, re.M)
    assert match and [float(match[i]) for i in (2, 1, 3)] == totals, done.stdout[-2000:]
    assert "[smoke:" in done.stdout[match.start():].splitlines()[0]  # labelled: the smoke model's counts
    bench_cfg = config.load([config.CONFIG_DIR / "benchmark.yaml"])
    assert int(match[4]) == len(archs) * bench_cfg.protocol.folds * len(bench_cfg.protocol.seeds)


def _gpu_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_counted_flops_scale_with_the_batch_and_ops_do_not_change() -> None:
    """What the estimate scales is exact: FLOPs per image and ops per step are the same at batch 2 and 4."""
    gpu_bench = _gpu_bench()
    counts = []
    for batch in (2, 4):
        cfg = config.load([config.CONFIG_DIR / "quick.yaml"], [*gpu_bench.SMOKE_SET, f"protocol.batch_size={batch}"])
        counts.append(gpu_bench.count_ops(cfg, "unet", gpu_bench._random_data(2 * batch, torch.device("cpu"))))
    small, large = counts
    assert small.train_flops_per_img > 0 and math.isclose(small.train_flops_per_img, large.train_flops_per_img, rel_tol=1e-9)
    assert math.isclose(small.infer_flops_per_img, large.infer_flops_per_img, rel_tol=1e-9)
    assert small.ops_per_step == large.ops_per_step and small.predict_ops == large.predict_ops
    assert small.optimizer_ops == large.optimizer_ops and small.convolutions == large.convolutions > 0
