"""Resume checkpoints are written off the training thread: the loop trains on while a write is in flight, one write
at a time, the snapshot is a copy (resuming from it ends where the uninterrupted cell ends), and a failed write
fails the cell with a one-line message."""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import checkpoint, cli, config
from bench import rundir as layout
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.data import folds, tgs
from bench.rundir import Cell
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow

QUICK = config.CONFIG_DIR / "quick.yaml"
CELL = Cell("unet", 0, 0)


def _setup(tiny_dataset: Path, **extra: object) -> tuple[config.Config, DeviceData, Any]:
    cfg = config.load([QUICK], tiny_overrides(tiny_dataset, **{"protocol.epochs": 3, **extra}))
    data = tgs.load(tiny_dataset)
    device_data = DeviceData.from_arrays(data.ids, data.images, data.masks, torch.device("cpu"))
    return cfg, device_data, folds.make_folds(data.masks, k=2, seed=0)


def test_the_loop_trains_on_while_a_slow_checkpoint_write_is_in_flight(tiny_dataset: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, data, assignment = _setup(tiny_dataset)
    release = threading.Event()
    lock = threading.Lock()
    writes: list[dict[str, Any]] = []  # one per checkpoint: its thread, whether it finished, its bytes
    in_flight, most_in_flight = [0], [0]
    real_to_bytes = checkpoint.to_bytes

    def slow_to_bytes(state: Any) -> bytes:
        with lock:
            in_flight[0] += 1
            most_in_flight[0] = max(most_in_flight[0], in_flight[0])
            write = {"thread": threading.current_thread(), "done": False}
            writes.append(write)
        release.wait(timeout=60)  # the first write holds until the loop has trained another epoch
        write["bytes"] = real_to_bytes(state)
        write["done"] = True
        with lock:
            in_flight[0] -= 1
        return write["bytes"]

    monkeypatch.setattr(checkpoint, "to_bytes", slow_to_bytes)
    during_write: list[bool] = []

    def on_epoch(epoch: int, score: float) -> None:
        if epoch == 1:  # epoch 1 has been trained while the checkpoint of epoch 0 was still being written
            during_write.append(len(writes) == 1 and not writes[0]["done"])
            release.set()

    out = tmp_path / "slow"
    train_cell(cfg.plan("unet"), CELL, data, assignment, out, on_epoch=on_epoch, progress=False)
    assert during_write == [True]
    assert len(writes) == 2 and all(w["done"] for w in writes)  # after epochs 0 and 1; none after the last
    assert all(w["thread"] is not threading.main_thread() for w in writes)
    assert most_in_flight[0] == 1
    assert (out / layout.METRICS).is_file() and not (out / layout.CHECKPOINT).exists()

    # the first checkpoint holds the state after epoch 0, although epoch 1 trained while it was serialised:
    # resuming from it ends exactly where the uninterrupted cell ended
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / layout.CHECKPOINT).write_bytes(writes[0]["bytes"])
    monkeypatch.setattr(checkpoint, "to_bytes", real_to_bytes)
    train_cell(cfg.plan("unet"), CELL, data, assignment, resumed, progress=False)
    assert (resumed / layout.MODEL).read_bytes() == (out / layout.MODEL).read_bytes()
    assert (resumed / layout.HISTORY).read_bytes() == (out / layout.HISTORY).read_bytes()


def test_a_crossfit_cell_copies_weights_to_the_host_only_for_its_artefacts(tiny_dataset: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept states stay on the device: with no checkpoint due, host copies (``.to("cpu", copy=True)``, what a
    snapshot makes) do not grow with the epochs; they are model.pt's weights, once per cell."""
    copied: list[int] = []
    real_to = torch.Tensor.to

    def counting_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs.get("copy") and any(str(a) == "cpu" for a in (*args, kwargs.get("device"))):
            copied.append(1)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    counts = []
    for epochs in (2, 4):
        cfg, data, assignment = _setup(tiny_dataset, **{"protocol.epochs": epochs, "protocol.checkpoint": "crossfit",
                                                        "runtime.checkpoint_every": 86400})
        copied.clear()
        train_cell(cfg.plan("unet"), CELL, data, assignment, tmp_path / f"e{epochs}", progress=False)
        counts.append(len(copied))
    n_state = len(torch.load(tmp_path / "e2" / layout.MODEL, weights_only=True))
    assert counts == [n_state, n_state]


def test_a_failed_checkpoint_write_fails_the_cell_with_one_line(tiny_dataset: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    real = checkpoint.atomic.write_bytes

    def full(path: str | os.PathLike, data: bytes) -> Path:
        if Path(path).name == layout.CHECKPOINT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(checkpoint.atomic, "write_bytes", full)
    out = tmp_path / "run"
    argv = ["run", "--config", str(QUICK), "--archs", "unet", "--folds", "0", "--out", str(out)]
    for s in tiny_overrides(tiny_dataset, **{"protocol.epochs": 3}):
        argv += ["--set", s]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # the rest is progress bars
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("salt-bench: error: ") and errors[0].endswith(
        f"{layout.CHECKPOINT}: writing the resume checkpoint failed ({os.strerror(errno.ENOSPC)})"), err
    assert not list(out.glob(f"cells/*/*/{layout.METRICS}"))  # the cell is not done
