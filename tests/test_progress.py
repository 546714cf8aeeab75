"""Progress for a person: ``salt-bench run`` prints cells done of total, the running cells' epochs and the time left,
read from the run directory whichever process trains; each cell's ``progress.json`` is gone once the cell is done;
``salt-bench tune`` says which trial of how many it finished (its end-to-end check is in test_tune)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import config, prepare, runner
from bench.progress import GridProgress, trial_progress
from bench.rundir import METRICS, Cell, CellProgress, RunDir
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
LINE = re.compile(r"^cells (\d+)/(\d+) done")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_line_counts_done_cells_names_running_epochs_and_extrapolates_the_epochs_left(tmp_path: Path) -> None:
    run, clock = RunDir(tmp_path), Clock()
    cells = [Cell("unet", 0, 0), Cell("unet", 1, 0), Cell("linknet", 0, 0), Cell("linknet", 1, 0)]
    for cell in cells:
        run.cell_dir(cell).mkdir(parents=True)
    grid = GridProgress(run, cells, {"unet": 10, "linknet": 10}, clock=clock)
    run.claim_file(cells[0]).write_text("host 1")
    clock.now = 5.0
    assert grid.line() == "cells 0/4 done, running: unet fold0-seed0 starting; 5 s elapsed"  # no time left before an epoch
    CellProgress(0, 10, 0).write(run.progress_file(cells[0]))
    assert grid.line() == "cells 0/4 done, running: unet fold0-seed0 epoch 0/10; 5 s elapsed"
    # unet fold0 finished (10 epochs); unet fold1 resumed at 4 and is at 9; linknet fold0 left a progress file but no
    # claim (a killed run's): it is pending, not running
    CellProgress(10, 10, 0).write(run.progress_file(cells[0]))
    grid.line()
    run.progress_file(cells[0]).unlink()
    (run.cell_dir(cells[0]) / METRICS).write_text("{}")
    run.claim_file(cells[1]).write_text("host 2")
    CellProgress(9, 10, 4).write(run.progress_file(cells[1]))
    CellProgress(3, 10, 0).write(run.progress_file(cells[2]))
    clock.now = 150.0
    # 15 epochs trained in 150 s, 1 + 10 + 10 left: 210 s
    assert grid.line() == "cells 1/4 done, running: unet fold1-seed0 epoch 9/10; 2.5 min elapsed, about 3.5 min left"


def test_a_line_is_due_when_a_cell_finishes_or_after_thirty_seconds(tmp_path: Path) -> None:
    run, clock = RunDir(tmp_path), Clock()
    cells = [Cell("unet", 0, 0), Cell("unet", 1, 0)]
    grid = GridProgress(run, cells, {"unet": 2}, clock=clock)
    clock.now = 10.0
    assert grid.due() is None
    clock.now = 31.0
    assert grid.due() == "cells 0/2 done; 31 s elapsed"
    clock.now = 32.0
    assert grid.due() is None
    run.cell_dir(cells[0]).mkdir(parents=True)
    (run.cell_dir(cells[0]) / METRICS).write_text("{}")
    assert grid.due().startswith("cells 1/2 done; 32 s elapsed, about 32 s left")


@pytest.mark.parametrize(("k", "n", "timeout", "elapsed", "expected"), [
    (1, 4, None, 60.0, "[trial 1/4; 60 s elapsed, about 3.0 min left]"),
    (4, 4, None, 240.0, "[trial 4/4; 4.0 min elapsed, about 0 s left]"),
    (2, None, 600.0, 120.0, "[trial 2; 2.0 min elapsed, about 8.0 min left]"),
    (1, 10, 300.0, 100.0, "[trial 1/10; 1.7 min elapsed, about 3.3 min left]"),  # the timeout comes first
])
def test_trial_progress(k: int, n: int | None, timeout: float | None, elapsed: float, expected: str) -> None:
    assert trial_progress(k, n, timeout, elapsed) == expected


def test_a_missing_or_broken_progress_file_reads_as_no_progress(tmp_path: Path) -> None:
    """Advisory: never an error that would stop a run."""
    path = tmp_path / "progress.json"
    assert CellProgress.read(path) is None
    for text in ("", "{", "[]", '{"epoch": 1}', '{"epoch": "1", "epochs": 2, "start": 0}', '{"epoch": true, "epochs": 2, '
                 '"start": 0}'):
        path.write_text(text)
        assert CellProgress.read(path) is None, text
    CellProgress(1, 2, 0).write(path)
    assert CellProgress.read(path) == CellProgress(1, 2, 0)


@pytest.mark.slow
def test_a_two_worker_run_prints_cells_done_of_total_up_to_all(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 2, "runtime.workers": 2})
    archs = ["unet", "linknet"]
    n = len(prepare.grid(config.load([QUICK], sets), archs))
    argv = [sys.executable, "-m", "bench.cli", "run", "--config", str(QUICK), "--archs", ",".join(archs),
            "--out", str(out), "--no-report"] + [a for s in sets for a in ("--set", s)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    counts = [(int(m.group(1)), int(m.group(2))) for m in map(LINE.match, lines) if m]
    assert n == 4 and counts, done.stdout
    assert all(total == n for _, total in counts) and counts[-1] == (n, n), counts
    assert [k for k, _ in counts] == sorted(k for k, _ in counts), counts
    last, board = (next(i for i, ln in enumerate(lines) if ln.startswith(s)) for s in (f"cells {n}/{n}", "leaderboard ("))
    assert last < board
    assert "left" not in lines[last]  # nothing is left once every cell is done
    assert lines[-1].startswith("no report (--no-report): `salt-bench report")
    assert not list(out.glob("cells/*/*/progress.json"))  # removed before each cell's artefacts were written
    assert len(list(out.glob("cells/*/*/metrics.json"))) == n


@pytest.mark.slow
def test_the_one_worker_path_prints_the_same_lines(tiny_dataset: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 1})
    runner.run_grid(config.load([QUICK], sets), tmp_path / "run", archs=["unet"], progress=True)
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if LINE.match(ln)][-1].startswith("cells 2/2 done; ")
    assert not list((tmp_path / "run").glob("cells/*/*/progress.json"))
