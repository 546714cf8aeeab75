"""The engine on CPU with tiny settings and the real code paths: identical batch streams, resume after
SIGKILL, protocol mixing refused, divergence recorded, and the CLI's one-line errors."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import config, results, runner
from bench.atomic import read_json
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.data import tgs
from bench.data.folds import dataset_fingerprint
from bench.errors import BenchError
from bench.rundir import Cell
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow

QUICK = config.CONFIG_DIR / "quick.yaml"
CLI = [sys.executable, "-m", "bench.cli"]


def _tiny(data_dir: Path, **extra: object) -> config.Config:
    return config.load([QUICK], tiny_overrides(data_dir, **extra))


def test_two_architectures_see_bit_identical_batches(tiny_dataset: Path) -> None:
    from bench.data import folds, tgs

    cfg = _tiny(tiny_dataset, **{"protocol.epochs": 2})
    data = tgs.load(tiny_dataset)
    assignment = folds.make_folds(data.masks, k=2, seed=0)
    device_data = DeviceData.from_arrays(data.ids, data.images, data.masks, torch.device("cpu"))
    digests = {}
    for arch in ("unet", "deeplabv3"):
        h = hashlib.sha256()

        def hook(epoch: int, x: torch.Tensor, y: torch.Tensor, h: "hashlib._Hash" = h) -> None:
            h.update(np.int64(epoch).tobytes() + x.numpy().tobytes() + y.numpy().tobytes())

        out = Path(tiny_dataset).parent / f"batches-{arch}"
        train_cell(cfg.plan(arch), Cell(arch, 0, 0), device_data, assignment, out, on_batch=hook, progress=False)
        digests[arch] = h.hexdigest()
    assert digests["unet"] == digests["deeplabv3"]
    other = hashlib.sha256()
    train_cell(cfg.plan("unet"), Cell("unet", 1, 0), device_data, assignment, Path(tiny_dataset).parent / "batches-f1",
               on_batch=lambda e, x, y: other.update(x.numpy().tobytes()), progress=False)
    assert other.hexdigest() != digests["unet"], "another fold must see another stream"


def test_resume_after_sigkill_gives_the_same_leaderboard(tiny_dataset: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(tiny_dataset, **{"protocol.epochs": 3})
    args = [a for o in overrides for a in ("--set", o)] + ["--archs", "unet,linknet", "--no-report"]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight = tmp_path / "straight"
    subprocess.run([*CLI, "run", "--config", str(QUICK), "--out", str(straight), *args], check=True, env=env,
                   capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "run", "--config", str(QUICK), "--out", str(killed), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    target = killed / "cells" / "unet" / "fold1-seed0" / "checkpoint.pt"
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed mid-cell"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "cells" / "unet" / "fold1-seed0" / "metrics.json").exists()
    resumed = subprocess.run([*CLI, "run", "--config", str(QUICK), "--out", str(killed), *args], check=True, env=env,
                             capture_output=True, text=True)
    assert "already done" in resumed.stdout
    assert not list(killed.rglob("*.tmp")), "a resumed run keeps stale temporary files"
    a = pd.read_csv(straight / "leaderboard.csv")
    b = pd.read_csv(killed / "leaderboard.csv")
    pd.testing.assert_frame_equal(a.drop(columns=results.MEASURED), b.drop(columns=results.MEASURED))


def test_run_writes_the_run_directory_and_beats_nothing_learned(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _tiny(tiny_dataset, **{"protocol.input.size": 64, "protocol.input.mode": "resize"})
    run_dir = tmp_path / "run"
    board = runner.run_grid(cfg, run_dir, archs=["unet"], progress=False)
    for name in ("config.yaml", "protocol.json", "splits.json", "env.json", "leaderboard.csv", "per_image.csv"):
        assert (run_dir / name).is_file(), name
    cell = run_dir / "cells" / "unet" / "fold0-seed0"
    for name in ("metrics.json", "history.csv", "oof.npz", "model.pt"):
        assert (cell / name).is_file(), name
    assert not (cell / "checkpoint.pt").exists()
    metrics = read_json(cell / "metrics.json")
    loaded = tgs.load(tiny_dataset)
    fingerprint = dataset_fingerprint(loaded.ids, loaded.masks)  # the data's contents are part of the protocol
    assert read_json(run_dir / "protocol.json")["protocol"]["data"]["fingerprint"] == fingerprint
    fingerprinted = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fingerprint=fingerprint))
    assert metrics["protocol_hash"] == read_json(run_dir / "protocol.json")["hash"] == config.protocol_hash(fingerprinted)
    assert len(pd.read_csv(cell / "history.csv")) == cfg.protocol.epochs
    per_image = pd.read_csv(run_dir / "per_image.csv")
    assert len(per_image) == 48 and per_image["id"].is_unique
    assert list(board["arch"]) == ["unet"] and 0.0 <= board["score"].iloc[0] <= 1.0
    # a second run with the same config trains nothing
    again = runner.run_grid(cfg, run_dir, archs=["unet"], progress=False)
    pd.testing.assert_frame_equal(board, again)


def test_mixing_protocols_in_one_run_dir_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    runner.run_grid(_tiny(tiny_dataset, **{"protocol.epochs": 1}), run_dir, archs=["unet"], folds=[0], progress=False)
    with pytest.raises(BenchError, match="protocol"):
        runner.run_grid(_tiny(tiny_dataset, **{"protocol.epochs": 2}), run_dir, archs=["unet"], folds=[0], progress=False)


def test_non_finite_loss_stops_the_cell_and_says_why(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import losses

    monkeypatch.setattr(losses.WeightedLoss, "forward", lambda self, logits, target: logits.mean() * float("nan"))
    runner.run_grid(_tiny(tiny_dataset), tmp_path / "run", archs=["unet"], folds=[0], progress=False)
    metrics = read_json(tmp_path / "run" / "cells" / "unet" / "fold0-seed0" / "metrics.json")
    assert metrics["status"] == "diverged"
    assert metrics["stop_reason"].startswith("non-finite loss at epoch 0")


def test_cli_bad_config_is_one_line_and_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol:\n  epochs: -3\n")
    proc = subprocess.run([*CLI, "run", "--config", str(QUICK), "--config", str(bad), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "protocol.epochs" in err[0]
    assert not (tmp_path / "r").exists()
