"""`salt-bench run` killed (SIGKILL) at each write point in turn: the next run finishes with the leaderboard of an
uninterrupted run and a complete report, and leaves no temporary file behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import results
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
TIMING = results.MEASURED  # measured, so they differ between any two runs

# (kill point, SALT_BENCH_KILL_AT) - None: killed by the test a moment into the second epoch
POINTS = [
    ("mid-epoch", None),
    ("during the checkpoint write", "checkpoint.pt:2:before"),
    ("between oof.npz and metrics.json", "metrics.json:1:before"),
    ("during the holdout prediction", "unet-seed0.npz:1:before"),
    ("during aggregation", "per_image.csv:1:before"),
    ("during the report", "report.html:1:before"),
]


def _argv(data: Path, out: Path) -> list[str]:
    sets = tiny_overrides(data, **{"protocol.epochs": 2, "data.holdout": 0.25})
    return [sys.executable, "-m", "bench.cli", "run", "--config", str(QUICK), "--archs", "unet", "--out", str(out),
            *[a for s in sets for a in ("--set", s)]]


def _env(kill_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SALT_BENCH_KILL_AT"}
    env["PYTHONPATH"] = str(ROOT)
    if kill_at:
        env["SALT_BENCH_KILL_AT"] = kill_at
    return env


def _run(argv: list[str], cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(kill_at), capture_output=True, text=True, timeout=600)


def _kill_mid_epoch(argv: list[str], cwd: Path, out: Path) -> int:
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(None), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "cells" / "unet" / "fold0-seed0" / "checkpoint.pt"
    while not checkpoint.is_file() and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # into the next epoch's steps
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


@pytest.fixture(scope="module")
def reference(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    cwd = tmp_path_factory.mktemp("reference")
    done = _run(_argv(tiny_dataset, cwd / "run"), cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return pd.read_csv(cwd / "run" / "leaderboard.csv")


@pytest.mark.parametrize("point,kill_at", POINTS, ids=[p for p, _ in POINTS])
def test_a_run_killed_at_each_write_point_resumes_to_the_same_result(point: str, kill_at: str | None,
                                                                       reference: pd.DataFrame, tiny_dataset: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = _argv(tiny_dataset, out)
    if kill_at is None:
        code = _kill_mid_epoch(argv, tmp_path, out)
    else:
        code = _run(argv, tmp_path, kill_at).returncode
    assert code == -signal.SIGKILL, f"{point}: the run was not killed (exit {code})"
    resumed = _run(argv, tmp_path)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
    board = pd.read_csv(out / "leaderboard.csv")
    pd.testing.assert_frame_equal(board.drop(columns=TIMING), reference.drop(columns=TIMING))
    report = out / "report.html"
    html = report.read_text()
    assert html.rstrip().endswith("</html>") and 'id="gallery"' in html and "data:image/png" in html
    assert (out / "aggregate.json").is_file() and (out / "gallery.npz").is_file()
    assert not list(tmp_path.rglob(".*.tmp")), f"{point}: temporary files left behind"
    assert not list(out.glob("cells/*/*/claim")) and not list(out.glob("cells/*/*/checkpoint.pt"))


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_refused_resumes_leave_the_run_as_it_was_and_an_empty_claim_is_stale(tiny_dataset: Path, tmp_path: Path) -> None:
    """A resume in another environment is refused before any cell trains (it used to train the pending cell, then
    refuse to aggregate, and the run then failed with its original config too); an empty claim file (a kill between
    creating it and writing host and pid) does not block its cell; ``compare`` refuses one run given twice."""
    from bench.runtime import native_bf16

    out = tmp_path / "run"
    argv = _argv(tiny_dataset, out) + ["--no-report"]
    first = _run(argv + ["--folds", "0"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree(tmp_path)
    # runtime.precision is the case; a CPU without native bf16 trains float32 either way (one environment)
    change, key = ("runtime.precision=bfloat16", "dtype") if native_bf16() else ("runtime.deterministic=false",
                                                                                   "deterministic")
    refused = _run(argv + ["--set", change], tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    lines = [line for line in refused.stderr.splitlines() if "finished in another environment" in line]
    assert len(lines) == 1 and lines[0].startswith("salt-bench") and f"{key} " in lines[0], refused.stderr
    assert "fold1-seed0" not in refused.stdout and _tree(tmp_path) == before  # nothing trained, nothing written

    claim = out / "cells" / "unet" / "fold1-seed0" / "claim"
    claim.parent.mkdir(parents=True)
    claim.write_text("")
    resumed = _run(argv, tmp_path)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
    assert "another process" not in resumed.stdout and "1 to train" in resumed.stdout
    assert (claim.parent / "metrics.json").is_file() and not claim.exists()
    assert pd.read_csv(out / "leaderboard.csv")["folds_done"].tolist() == [2]

    (tmp_path / "x").mkdir()
    (tmp_path / "link").symlink_to(out)
    for spelling in (out, tmp_path / "x" / ".." / "run", tmp_path / "link"):
        same = _run([sys.executable, "-m", "bench.cli", "compare", str(out), str(spelling)], tmp_path)
        assert same.returncode == 2 and "Traceback" not in same.stderr
        assert same.stderr.startswith("salt-bench") and "are the same run directory" in same.stderr, same.stderr
    assert not (out / "compare").exists()

    mixed = _run(argv + ["--archs", "linknet", "--folds", "0", "--set", change, "--allow-mixed"], tmp_path)
    assert mixed.returncode == 0, mixed.stderr[-2000:]  # asked for: trained, and ranked with a warning
    assert "different environments (--allow-mixed)" in mixed.stdout
    assert (out / "cells" / "linknet" / "fold0-seed0" / "metrics.json").is_file()
