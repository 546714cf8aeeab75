"""Cells are claimed: local workers and concurrent `salt-bench run`s share a run directory without training a cell
twice, and the leaderboard does not depend on how many workers trained it."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import atomic, config, results, runner
from bench.executors import claim, release
from bench.rundir import Cell, RunDir
from tests.conftest import tiny_overrides

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
ROOT = Path(__file__).resolve().parents[1]
TIMING = results.MEASURED  # measured, so they differ between any two runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    run, cell = RunDir(tmp_path), Cell("unet", 0, 0)
    assert claim(run, cell)
    assert not claim(run, cell)  # held by a live process (this one)
    release(run, cell)
    assert claim(run, cell)
    run.claim_file(cell).write_text(f"{socket.gethostname()} {_dead_pid()}")
    assert claim(run, cell)  # its holder is gone
    assert run.claim_file(cell).read_text() == f"{socket.gethostname()} {os.getpid()}"
    run.claim_file(cell).write_text(f"another-host.example {os.getpid()}")
    assert not claim(run, cell)  # a claim of another host cannot be checked, so it is respected


def test_a_claim_is_created_complete_and_one_naming_no_process_is_taken_over(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty claim (a kill between creating the file and writing it) once blocked its cell for ever."""
    run, cell = RunDir(tmp_path), Cell("unet", 0, 0)
    me = f"{socket.gethostname()} {os.getpid()}"
    run.cell_dir(cell).mkdir(parents=True)
    for left in ("", "garbage", socket.gethostname(), f"{socket.gethostname()} pid"):
        run.claim_file(cell).write_text(left)
        assert claim(run, cell), left
        assert run.claim_file(cell).read_text() == me
        assert not claim(run, cell)  # and now it is a live claim
        release(run, cell)
    linked = []
    real_link = os.link

    def spy(src: str, dst: str, **kwargs: object) -> None:
        linked.append((Path(dst).name, Path(src).read_text()))
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", spy)
    assert claim(run, cell)
    assert linked == [("claim", me)]  # the name appears holding host and pid, never empty
    assert [p.name for p in run.cell_dir(cell).iterdir()] == ["claim"]  # no temporary file left


def _cells(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.glob("cells/*/*/oof.npz"))}


@pytest.mark.slow
def test_two_local_workers_give_the_leaderboard_of_one(tiny_dataset: Path, tmp_path: Path) -> None:
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 1, "data.holdout": 0.25})
    one = runner.run_grid(config.load([QUICK], sets + ["runtime.workers=1"]), tmp_path / "one", archs=["unet", "linknet"],
                     progress=False)
    two = runner.run_grid(config.load([QUICK], sets + ["runtime.workers=2"]), tmp_path / "two", archs=["unet", "linknet"],
                     progress=False)
    assert _cells(tmp_path / "one") == _cells(tmp_path / "two") and len(_cells(tmp_path / "one")) == 4
    pd.testing.assert_frame_equal(one.drop(columns=TIMING), two.drop(columns=TIMING))
    assert not list((tmp_path / "two").glob("cells/*/*/claim"))  # every claim released


@pytest.mark.slow
def test_two_runs_on_one_directory_never_train_the_same_cell(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 2, "data.holdout": 0})
    argv = [sys.executable, "-m", "bench.cli", "run", "--config", str(QUICK), "--archs", "unet,linknet,pspnet",
            "--out", str(out), "--no-report"] + [a for s in sets for a in ("--set", s)]
    # the first creates the run directory; the second starts once it has
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (out / "protocol.json").is_file() and first.poll() is None:
        pass
    second = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[1][-2000:] for o in outs]
    trained = [line.split()[1:6] for o in outs for line in o[0].splitlines() if line.startswith("done ")]
    assert len(trained) == 6 and len({tuple(t) for t in trained}) == 6, trained  # each cell exactly once


@pytest.mark.slow
def test_workers_exit_when_their_run_is_killed(tiny_dataset: Path, tmp_path: Path) -> None:
    """kill -9 of ``salt-bench run`` leaves no worker training on as an orphan, and its claims are taken over."""
    import signal
    import time

    out = tmp_path / "killed"
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 40, "runtime.workers": 2})
    argv = [sys.executable, "-m", "bench.cli", "run", "--config", str(QUICK), "--archs", "unet,linknet",
            "--out", str(out), "--no-report"] + [a for s in sets for a in ("--set", s)]
    parent = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(out.glob("cells/*/*/claim"))) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
    claims = [p.read_text() for p in out.glob("cells/*/*/claim")]
    assert len(claims) == 2, claims
    workers = [int(c.split()[1]) for c in claims]
    assert parent.pid not in workers  # the claims are the workers'
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while any(atomic.pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(atomic.pid_alive(pid) for pid in workers), "a worker outlived its run"
    assert claim(RunDir(out), Cell("unet", 0, 0))  # the dead worker's claim is taken over

