"""The CPU profile's two benchmark scripts run end to end on tiny settings and print what their tables claim:
``cpu_profile.py`` (the real ``salt-bench run`` on a written variant; margins over the all-empty score of the
images ranked), ``cpu_step_speed.py`` (img/s of the real ``Trainer.step`` per candidate), ``cpu_step_profile.py``
(where a step's time goes) and ``cost_table.py`` (counted FLOPs, parameters, img/s)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import runtime

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cpu_profile_margins_are_over_the_ranked_images_all_empty_score(tmp_path: Path) -> None:
    done = _script("cpu_profile.py", "--recipes", "quick,fp32-30ep", "--variants", "2:hard", "--n-train", "40",
                   "--archs", "unet", "--work", str(tmp_path), "--csv", str(tmp_path / "long.csv"),
                   "--set", "protocol.epochs=1", "--set", "protocol.loss.switch_epoch=1", "--set", "runtime.workers=1",
                   "--set", "runtime.validate_every=1")
    assert done.returncode == 0, done.stderr[-2000:]
    long = pd.read_csv(tmp_path / "long.csv")
    assert list(long["recipe"]) == ["quick", "fp32-30ep"] and set(long["variant"]) == {"2:hard"}
    for recipe in ("quick", "fp32-30ep"):
        run = tmp_path / "runs" / f"{recipe}-s2-hard"
        summary = json.loads((run / "aggregate.json").read_text())
        board = pd.read_csv(run / "leaderboard.csv")
        row = long[long["recipe"] == recipe].iloc[0]
        assert summary["score_source"] == "holdout"
        assert row["baseline"] == pytest.approx(summary["all_empty_holdout"])
        assert row["margin"] == pytest.approx(board["score"].iloc[0] - summary["all_empty_holdout"])
        assert row["oof_margin"] == pytest.approx(board["oof_score"].iloc[0] - summary["all_empty_oof"])
    metrics = {r: json.loads(next((tmp_path / "runs" / f"{r}-s2-hard" / "cells" / "unet").glob("*/metrics.json"))
                             .read_text()) for r in ("quick", "fp32-30ep")}
    assert {r: m["dtype"] for r, m in metrics.items()} == {
        "quick": "bfloat16" if runtime.native_bf16() else "float32", "fp32-30ep": "float32"}
    assert {m["device_name"] for m in metrics.values()} == {runtime.cpu_name()}  # each cell names its CPU (Ray too)
    assert "margins below the goal of 0.05" in done.stdout and "cross-fitted OOF margin" in done.stdout


def test_cpu_profile_refuses_an_unknown_recipe_in_one_line(tmp_path: Path) -> None:
    done = _script("cpu_profile.py", "--recipes", "nonesuch", "--work", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "nonesuch" in done.stderr and "known:" in done.stderr


def test_cpu_step_speed_prints_a_row_per_candidate() -> None:
    done = _script("cpu_step_speed.py", "--archs", "unet,linknet", "--steps", "1", "--repeats", "1",
                   "--candidate", "quick=", "--candidate", "fp32=runtime.precision=float32;protocol.batch_size=4")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
            if line.split() and line.split()[0] in ("quick", "fp32")}
    assert set(rows) == {"quick", "fp32"}
    for values in rows.values():  # unet, linknet img/s, s/epoch of both, warm-up s
        ips, per_epoch = [float(v) for v in values[:2]], float(values[2])
        assert len(values) == 4 and all(v > 0 for v in ips)
        assert per_epoch == pytest.approx(sum(240 / v for v in ips), rel=0.05)


def test_cost_table_prints_the_flops_every_cell_records() -> None:
    from bench import config, cost

    done = _script("cost_table.py", "--configs", "quick.yaml", "--archs", "unet,linknet", "--steps", "1", "--repeats", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.split()[:1] in (["unet"], ["linknet"])}
    cfg = config.load([config.CONFIG_DIR / "quick.yaml"], [])
    for arch, values in rows.items():
        flops = cost.count_flops(cfg.plan(arch))
        assert float(values[0]) == pytest.approx(flops.train / 1e9, abs=5e-4)
        assert float(values[1]) == pytest.approx(flops.infer / 1e9, abs=5e-4)
        assert float(values[3]) > 0
    assert float(rows["linknet"][4]) == 1.0  # the cheapest in counted FLOPs is the unit


def test_cpu_step_profile_splits_a_step_into_phases_and_operators() -> None:
    done = _script("cpu_step_profile.py", "--archs", "unet", "--steps", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("unet")]
    phases, shares = lines
    ms = [float(v) for v in phases[3::2]]  # batch, forward+loss, backward, optimizer in ms
    assert len(ms) == 4 and all(v > 0 for v in ms) and sum(ms) == pytest.approx(float(phases[2]), rel=0.01)
    percents = [float(v.rstrip("%")) for v in shares[1:]]
    assert len(percents) == 8 and percents[0] > 5 and sum(percents) == pytest.approx(100, abs=len(percents))
