"""Nothing outside what the user named is deleted or written: files planted beside and below ``--out`` and beside
the report path (temporary-looking names and folders included) survive ``run``, ``report``, ``tune`` and
``predict`` byte for byte, and two runs of one folder name never share a report.

One tiny run (two epochs, unet) through the real CLI; every command after it reuses it."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def _plant(root: Path, paths: list[str]) -> None:
    """A file at each path; a path ending in '/' is a folder with a file in it."""
    for rel in paths:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            (path / "inside.txt").write_text(f"kept: {rel}inside.txt\n")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"kept: {rel}\n")


def _checksums(root: Path, outputs: list[Path]) -> dict[str, str]:
    """sha256 of every file and the name of every folder under ``root``, except under ``outputs``."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == out or out in path.parents for out in outputs):
            continue
        rel = str(path.relative_to(root))
        found[rel] = "folder" if path.is_dir() and not path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SALT_BENCH_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{argv[0]}: {done.stderr[-3000:]}"
    return done


def test_planted_files_survive_every_command(tiny_dataset: Path, tmp_path: Path) -> None:
    dead = _dead_pid()
    out, report, other = tmp_path / "runs" / "quick", tmp_path / "U" / "report.html", tmp_path / "b" / "quick"
    # a stray file with atomic_write's own name and a dead pid: removed inside the run's folders, kept anywhere else
    own_temp = f".leaderboard.csv.{dead}.ab12_xyz.tmp"
    beside = [".session.99999999.tmp", "other/.draft.tmp", "deep.tmp/", ".deep.tmp/", own_temp, "old-run/notes.txt"]
    _plant(tmp_path / "runs", beside)
    _plant(tmp_path / "U", [".session.99999999.tmp", "project/deep/.draft.tmp", "deep.tmp/", ".deep.tmp/inner/",
                            f".report.html.{dead}.ab12_xyz.tmp"])
    below = [".notes.tmp", "notes/.draft.tmp", ".session.99999999.tmp", ".old.tmp/", "deep.tmp/",
             f"notes/{own_temp}", "cells/unet/fold0-seed0/sub/.draft.tmp"]
    _plant(out, below + [own_temp])
    planted_below = _checksums(out, [])
    del planted_below[own_temp]
    outputs = [out, report, other.parent, tmp_path / "cache"]
    before = _checksums(tmp_path, outputs)
    data_before = _checksums(tiny_dataset, [])

    sets = [a for s in tiny_overrides(tiny_dataset) for a in ("--set", s)]
    _cli(tmp_path, "run", "--config", QUICK, *sets, "--archs", "unet", "--out", str(out))
    assert (out / "report.html").is_file() and not (out / own_temp).exists()
    _cli(tmp_path, "report", str(out), "--out", str(report))
    _cli(tmp_path, "tune", "--config", QUICK, *sets, "--arch", "unet", "--n-trials", "1", "--out", str(out))
    assert (out / "tuning" / "tune-unet.db").is_file()
    _cli(tmp_path, "predict", str(out))
    assert (out / "submission.csv").is_file()

    # the same folder name elsewhere: its report is its own, the first one is untouched
    shutil.copytree(out, other)
    first = (out / "report.html").read_bytes()
    done = _cli(tmp_path, "report", str(other))
    assert done.stdout.strip() == f"report: {other / 'report.html'}"
    assert (out / "report.html").read_bytes() == first and (other / "report.html").is_file()

    assert _checksums(tmp_path, outputs) == before, "a file beside --out or the report was changed, removed or added"
    assert {k: v for k, v in _checksums(out, []).items() if k in planted_below} == planted_below, "a file below --out"
    assert _checksums(tiny_dataset, []) == data_before
