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


def test_remove_stale_temps_keeps_files_of_live_writers(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "cells").mkdir()
    stale = tmp_path / "cells" / f".model.pt.{dead_pid}.ab12_x.tmp"
    live = tmp_path / f".oof.npz.{os.getpid()}.cd34_y.tmp"
    stale.write_text("half")
    live.write_text("in progress")
    assert atomic.remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and not stale.exists()
