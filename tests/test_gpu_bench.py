"""benchmarks/gpu_bench.py --smoke runs end to end on the CPU and prints its plan first, then its tables: the measured
step, checkpoint, workers sharing the device and grid, compile, determinism (bit-identical on the CPU), the op-count
estimate of benchmark.yaml, and the actual time per mode beside the plan. Its parts: time-boxed loops, the workers
measurement on the CPU, the MPS daemon's start and stop (against a stand-in for nvidia-cuda-mps-control), the grid
estimate from a measured rate; the counts the op-count estimate scales are exact."""
from __future__ import annotations

import importlib
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import torch

from bench import config

ROOT = Path(__file__).resolve().parents[1]
TRAINING_HEADERS = ["arch", "stage", "epoch", "batch", "steps", "harness_img/s", "step_img/s", "bare_img/s", "harness/bare",
                    "step/bare", "aten_ops/step", "gpu_busy", "syncs/step", "bare_syncs/step", "cuda_syncs/step", "peak_MiB",
                    "TFLOP/s"]
ARCH_HEADERS = ["arch", "params_M", "snapshot_ms", "write_ms", "ckpt_MiB", "val_ms/img", "oof_ms/img"]
WORKERS_HEADERS = ["arch", "mps", "procs", "steps_1proc", "steps_Nproc", "1proc_img/s", "Nproc_img/s", "scaling",
                   "peak_MiB/proc"]
GRID_HEADERS = ["arch", "cells", "steps/epoch", "epochs_first", "epochs_then", "train_s", "val_s", "ckpt_s", "oof_s", "ckpt_%",
                "cell_min", "arch_h", "workers_x", "basis", "wall_h"]
COMPILE_HEADERS = ["arch", "compile", "first_step_s", "steps", "harness_img/s", "speedup"]
DETERMINISM_HEADERS = ["arch", "deterministic", "result", "steps", "steps/s"]
PLAN_MODES = ["stages", "workers", "compile", "determinism", "op-count"]
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


@pytest.mark.slow
def test_smoke_prints_its_plan_first_then_one_row_per_arch_and_stage_and_a_finite_estimate() -> None:
    # PYTHONPATH: the script and its worker processes import this checkout's bench, not an installed one
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()

    cfg = config.load([config.CONFIG_DIR / "quick.yaml"])
    archs = list(cfg.architectures)[:2]
    stages = ["first"] + (["then"] if cfg.protocol.loss.then is not None else [])
    workers = cfg.runtime.workers
    assert workers == 2  # quick.yaml's: the smoke measures 2 processes against 1

    plan_at = next(i for i, line in enumerate(lines) if line.startswith("plan (--minutes 5): each mode has a fixed share"))
    assert plan_at <= 3  # after the bf16 note and the header line
    plan = [line.split()[0] for line in lines[plan_at + 1: plan_at + 6]]
    assert plan == PLAN_MODES
    shares = [float(line.split()[1]) for line in lines[plan_at + 1: plan_at + 5]]  # stages .. determinism, in s
    assert math.isclose(sum(shares), 300, abs_tol=2) and "not boxed" in lines[plan_at + 5]
    assert f"{{1, {workers}}} processes x {{no MPS}}; MPS: not available (no CUDA)" in lines[plan_at + 2]

    header, rows = _table(lines, "Training step")
    assert header == TRAINING_HEADERS
    assert sorted((r["arch"], r["stage"]) for r in rows) == sorted((a, s) for a in archs for s in stages)
    for r in rows:
        assert r["steps"] == "2"  # --steps 2 stops each loop long before its time box
        for column in ("harness_img/s", "step_img/s", "bare_img/s", "aten_ops/step", "TFLOP/s"):
            assert float(r[column]) > 0, (r["arch"], r["stage"], column)
        assert r["gpu_busy"] == "n/a" and r["peak_MiB"] == "n/a"  # CPU: no GPU fraction, no CUDA memory
        assert float(r["syncs/step"]) >= float(r["bare_syncs/step"]) >= 0

    header, per_arch = _table(lines, "Per architecture")
    assert header == ARCH_HEADERS
    assert [r["arch"] for r in per_arch] == archs
    assert all(float(r[c]) > 0 for r in per_arch for c in ARCH_HEADERS[1:])

    assert "MPS: not available (no CUDA)" in lines
    header, shared = _table(lines, "Workers sharing the device")
    assert header == WORKERS_HEADERS
    assert [(r["arch"], r["mps"], r["procs"]) for r in shared] == [(a, "no", str(workers)) for a in archs]
    for r in shared:
        assert r["steps_1proc"] == r["steps_Nproc"] == "2" and r["peak_MiB/proc"] == "n/a"
        one, many = float(r["1proc_img/s"]), float(r["Nproc_img/s"])
        assert one > 0 and many > 0 and math.isclose(float(r["scaling"]), many / one, abs_tol=0.01)

    header, grid = _table(lines, "Grid estimate")
    assert header == GRID_HEADERS
    assert [r["arch"] for r in grid] == archs + ["TOTAL"]
    assert all(math.isfinite(float(r["arch_h"])) and float(r["arch_h"]) > 0 for r in grid)
    for r, w in zip(grid, shared):  # the measured 2-process scaling, not the 1-process/2 bound
        assert r["basis"] == "measured" and r["workers_x"] == w["scaling"]
        assert math.isclose(float(r["wall_h"]), float(r["arch_h"]) / float(r["workers_x"]), abs_tol=0.01)
    match = re.search(r"^grid estimate: ([0-9.]+) h serial, ([0-9.]+) h with (\d+) worker\(s\) \(measured: ", done.stdout, re.M)
    assert match, done.stdout[-2000:]
    serial, parallel = float(match[1]), float(match[2])
    assert int(match[3]) == workers and serial == float(grid[-1]["arch_h"]) and parallel == float(grid[-1]["wall_h"])

    header, compiled = _table(lines, "Compile")
    assert header == COMPILE_HEADERS
    assert [(r["arch"], r["compile"]) for r in compiled] == [(archs[0], "false")] and float(compiled[0]["harness_img/s"]) > 0
    assert any(line.startswith("compile default and reduce-overhead: not measured on the CPU") for line in lines)

    header, determinism = _table(lines, "Determinism")
    assert header == DETERMINISM_HEADERS
    expected = sorted((a, d) for a in archs for d in ("true", "false"))
    assert sorted((r["arch"], r["deterministic"]) for r in determinism) == expected
    assert all(r["result"] == "identical" and float(r["steps/s"]) > 0 for r in determinism)  # the CPU is deterministic
    assert {r["steps"] for r in determinism} == {str(2 * len(stages))}  # --determinism-steps 2 per loss stage

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

    header, actual = _table(lines, "Plan against actual")
    assert header == ["mode", "planned_s", "actual_s", "skipped_units"]
    assert [r["mode"] for r in actual] == PLAN_MODES
    assert [float(r["planned_s"]) for r in actual[:4]] == shares
    assert all(float(r["actual_s"]) >= 0 and r["skipped_units"] == "0" for r in actual[:4])


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Imports a module of benchmarks/ as the scripts import each other (and spawned workers find them)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module


def test_a_boxed_loop_stops_when_its_box_is_spent_or_at_its_steps(benchmarks: Callable[[str], ModuleType]) -> None:
    common = benchmarks("gpu_common")
    cpu = torch.device("cpu")

    def chunk(n: int) -> Callable[[], None]:
        return lambda: time.sleep(0.002 * n)

    chunks, spent = common.boxed(chunk, 10_000, 0.1, cpu)
    assert spent >= 0.1 and sum(chunks) < 10_000  # the box stopped it
    assert chunks[:3] == [1, 2, 4] and all(n in common.chunk_sizes(10_000) for n in chunks)
    assert spent < 0.1 + 0.002 * common.MAX_CHUNK * 3  # at most about one chunk past the box
    chunks, spent = common.boxed(chunk, 5, 60.0, cpu)
    assert sum(chunks) == 5 and spent < 60  # the steps stopped it, long before the box
    chunks, _ = common.boxed(chunk, 100, 0.0, cpu)
    assert chunks == [1]  # an empty box still times one step


def test_a_mode_hands_out_what_is_left_of_its_share(benchmarks: Callable[[str], ModuleType]) -> None:
    common = benchmarks("gpu_common")
    with common.Mode("m", "", units=4, seconds=1.0) as mode:
        assert math.isclose(mode.slice(), 0.25, rel_tol=0.2)
        time.sleep(0.6)  # the first unit overran its slice: the three others share the 0.4 s left
        assert mode.slice() < 0.4 / 3 + 0.01 and not mode.skip_spent()
        time.sleep(0.5)
        assert mode.skip_spent() and mode.skipped == 1
    assert mode.actual_s >= 1.1


@pytest.mark.slow
def test_the_workers_measurement_runs_two_processes_together_on_the_cpu(
        benchmarks: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]) -> None:
    common, workers_mod, gpu_bench = benchmarks("gpu_common"), benchmarks("gpu_workers"), benchmarks("gpu_bench")
    cfg = config.load([config.CONFIG_DIR / "quick.yaml"], gpu_bench.SMOKE_SET)
    with common.Mode("workers", "", units=4, seconds=120.0) as mode:  # an architecture that fails, then one that runs
        rows = workers_mod.measure_workers(cfg, ["nonesuch", "unet"], torch.device("cpu"), 2, steps=3, warmup=1, mode=mode)
    assert "MPS: not available (no CUDA)" in capsys.readouterr().out
    failed, rows = rows[:2], rows[2:]
    assert [(r.arch, r.procs, r.runs) for r in failed] == [("nonesuch", 1, []), ("nonesuch", 2, [])]
    assert all(r.error.startswith("failed: ") and "nonesuch" in r.error for r in failed)  # the cause, not the barrier
    one, many = rows
    assert [(r.arch, r.mps, r.procs, r.error) for r in rows] == [("unet", False, 1, None), ("unet", False, 2, None)]
    assert len(one.runs) == 1 and len(many.runs) == 2
    assert all(r.steps == 3 and r.images == 3 * cfg.protocol.batch_size and r.peak_mb is None for r in one.runs + many.runs)
    assert max(r.start for r in many.runs) < min(r.end for r in many.runs)  # released together by the barrier
    assert one.images_per_s > 0 and many.images_per_s > 0
    ratio = workers_mod.scaling(rows, False, 2)["unet"]
    assert math.isclose(ratio, many.images_per_s / one.images_per_s) and 0 < ratio < 4
    assert workers_mod.scaling(rows, True, 2) == {}  # nothing measured under MPS


def test_mps_is_not_available_without_cuda_or_without_its_control_program(
        benchmarks: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    workers_mod = benchmarks("gpu_workers")
    assert workers_mod.mps_unavailable(torch.device("cpu")) == "no CUDA"
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control here
    assert workers_mod.mps_unavailable(torch.device("cuda")) == "nvidia-cuda-mps-control is not on PATH"


FAKE_CONTROL = """#!/bin/sh
if [ "$1" = "-d" ]; then
  echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$FAKE_MPS_LOG"
  if [ -n "$FAKE_MPS_FAIL" ]; then echo "fake: cannot start"; exit 1; fi
else
  read command
  echo "$command $CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_MPS_LOG"
fi
"""


def test_the_mps_daemon_is_private_and_always_told_to_quit(
        benchmarks: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Against a stand-in for nvidia-cuda-mps-control: no GPU has run the real one."""
    workers_mod = benchmarks("gpu_workers")
    control = tmp_path / "bin" / workers_mod.MPS_CONTROL
    control.parent.mkdir()
    control.write_text(FAKE_CONTROL)
    control.chmod(0o755)
    log = tmp_path / "control.log"
    monkeypatch.setenv("PATH", f"{control.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))

    with pytest.raises(RuntimeError, match="inside"):
        with workers_mod.mps_daemon() as env:
            assert set(env) == {"CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"}
            assert all(Path(d).is_dir() for d in env.values()) and "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
            pipe = env["CUDA_MPS_PIPE_DIRECTORY"]
            raise RuntimeError("inside")
    assert log.read_text().splitlines() == [f"start {pipe} {env['CUDA_MPS_LOG_DIRECTORY']}", f"quit {pipe}"]
    assert not Path(pipe).exists()  # the temporary directory went with it
    assert capsys.readouterr().out == ""

    log.unlink()
    monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    with workers_mod.mps_daemon() as env:
        assert env is None
    said = capsys.readouterr().out.splitlines()
    assert said == ["MPS: the control daemon did not start (exit code 1: fake: cannot start); measuring without MPS only"]
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "quit"]


def _stage_row(gpu_bench: ModuleType, arch: str, stage: str, harness_s: float) -> Any:
    return gpu_bench.StageRow(arch, stage, 0, 10, harness_s, harness_s, harness_s, 4, 100.0, None, 1.0, 1.0, {}, None,
                              None, 1e9)


def test_the_grid_estimate_takes_the_measured_worker_rate_where_there_is_one(
        benchmarks: Callable[[str], ModuleType]) -> None:
    gpu_bench = benchmarks("gpu_bench")
    cfg = config.load([config.CONFIG_DIR / "quick.yaml"], gpu_bench.SMOKE_SET)
    rows = [_stage_row(gpu_bench, a, s, 0.05) for a in ("unet", "linknet") for s in ("first", "then")]
    arch_rows = [gpu_bench.ArchRow(a, 1.0, 0.01, 0.02, 5.0, 0.001, 0.003) for a in ("unet", "linknet")]

    grid = {g["arch"]: g for g in gpu_bench.estimate(cfg, rows, arch_rows, 2, {"unet": 1.5})}
    assert grid["unet"]["basis"] == "measured" and grid["unet"]["workers_x"] == 1.5
    assert math.isclose(grid["unet"]["wall_h"], grid["unet"]["arch_h"] / 1.5)
    assert grid["linknet"]["basis"] == "bound" and grid["linknet"]["workers_x"] == 2
    assert math.isclose(grid["linknet"]["wall_h"], grid["linknet"]["arch_h"] / 2)
    bound = {g["arch"]: g for g in gpu_bench.estimate(cfg, rows, arch_rows, 2, {})}
    assert bound["unet"]["arch_h"] == grid["unet"]["arch_h"] and bound["unet"]["basis"] == "bound"  # serial unchanged
    serial = gpu_bench.estimate(cfg, rows, arch_rows, 1, {"unet": 1.5})
    assert all(g["basis"] == "serial" and g["wall_h"] == g["arch_h"] for g in serial)


def test_counted_flops_scale_with_the_batch_and_ops_do_not_change(benchmarks: Callable[[str], ModuleType]) -> None:
    """What the estimate scales is exact: FLOPs per image and ops per step are the same at batch 2 and 4."""
    common, estimate, gpu_bench = benchmarks("gpu_common"), benchmarks("gpu_estimate"), benchmarks("gpu_bench")
    counts = []
    for batch in (2, 4):
        cfg = config.load([config.CONFIG_DIR / "quick.yaml"], [*gpu_bench.SMOKE_SET, f"protocol.batch_size={batch}"])
        counts.append(estimate.count_ops(cfg, "unet", common.random_data(2 * batch, torch.device("cpu"))))
    small, large = counts
    assert small.train_flops_per_img > 0 and math.isclose(small.train_flops_per_img, large.train_flops_per_img, rel_tol=1e-9)
    assert math.isclose(small.infer_flops_per_img, large.infer_flops_per_img, rel_tol=1e-9)
    assert small.ops_per_step == large.ops_per_step and small.predict_ops == large.predict_ops
    assert small.optimizer_ops == large.optimizer_ops and small.convolutions == large.convolutions > 0
