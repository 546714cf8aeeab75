"""Atomic writes and the clean-up of temporary files left by killed writers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import atomic


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"score": 1})

    def explode(fh: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, explode)
    assert atomic.read_json(target) == {"score": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    target = atomic.write_text(tmp_path / "index.html", "<p>report</p>")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_npz_round_trip(tmp_path: Path) -> None:
    atomic.write_npz(tmp_path / "a.npz", x=np.arange(5, dtype=np.uint8))
    with np.load(tmp_path / "a.npz") as z:
        assert z["x"].tolist() == [0, 1, 2, 3, 4]


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def test_only_atomic_writes_own_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    """Exactly the name ``atomic_write`` gives (``.<name>.<pid>.<8 random>.tmp``), a regular file, a dead pid,
    in the folder given and not below it; anything else named like a temporary file is somebody's file."""
    dead = _dead_pid()
    stale = tmp_path / f".model.pt.{dead}.ab12_xyz.tmp"
    kept = [tmp_path / f".oof.npz.{os.getpid()}.cd34_y9z.tmp",  # a live writer's
            tmp_path / ".draft.tmp", tmp_path / ".session.99999999.tmp", tmp_path / "notes.tmp",
            tmp_path / f".model.pt.{dead}.short.tmp", tmp_path / f".model.pt.{dead}.ab12_xyz.tmp.bak",
            tmp_path / "below" / f".model.pt.{dead}.ab12_xyz.tmp"]  # not this folder
    for path in [stale, *kept]:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    (tmp_path / f".dir.{dead}.ab12_xyz.tmp").mkdir()  # a folder of that name, and one named x.tmp
    (tmp_path / "deep.tmp").mkdir()
    (tmp_path / f".link.{dead}.ab12_xyz.tmp").symlink_to(tmp_path / "notes.tmp")
    assert atomic.remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and all(p.read_text() == "x" for p in kept)
    assert (tmp_path / f".dir.{dead}.ab12_xyz.tmp").is_dir() and (tmp_path / f".link.{dead}.ab12_xyz.tmp").is_symlink()
    assert atomic.remove_stale_temps(tmp_path / "missing") == [] and atomic.remove_stale_temps(tmp_path / "notes.tmp") == []


def test_the_temporary_name_is_the_one_remove_stale_temps_knows(tmp_path: Path) -> None:
    """A writer killed mid-write leaves a file that ``remove_stale_temps`` recognises (its pid made dead here)."""
    seen = []

    def stop(fh: object) -> None:
        seen.extend(tmp_path.iterdir())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(tmp_path / "metrics.json", stop)
    assert len(seen) == 1 and atomic._TEMP.fullmatch(seen[0].name)
    assert seen[0].name.startswith(f".metrics.json.{os.getpid()}.")


def test_a_run_directory_is_cleaned_folder_by_folder_and_only_inside(tmp_path: Path) -> None:
    """The run's own folders are cleaned; a user's folder inside the run, and a folder a link leads to outside
    it, are not."""
    from bench.rundir import Cell, RunDir

    run = RunDir(tmp_path / "run")
    name = f".x.{_dead_pid()}.ab12_xyz.tmp"
    ours = [run.path, run.cell_dir(Cell("unet", 0, 0)), run.holdout_dir, run.imagesets_dir / "fold1",
            run.tuning_dir / "tune-unet" / "trial-3" / "fold0-seed0", run.compare_dir, run.tuning_dir]
    outside = tmp_path / "elsewhere"
    theirs = [run.path / "notes", run.path / "cells" / "unet" / "fold0-seed0" / "sub", outside]
    for folder in ours + theirs:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    (run.cells_dir / "linked").mkdir()
    (run.cells_dir / "linked" / "fold0-seed0").symlink_to(outside)
    assert sorted(run.remove_stale_temps()) == sorted(folder / name for folder in ours)
    assert all((folder / name).read_text() == "x" for folder in theirs)
