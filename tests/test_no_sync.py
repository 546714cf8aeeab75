"""An epoch of the real training loop makes no host sync between steps: its syncs do not grow with its steps."""
from __future__ import annotations

from pathlib import Path

import torch

from bench import config
from bench.cell.data import DeviceData, FoldSplit
from bench.cell.loop import train_one_epoch
from bench.cell.trainer import Trainer
from bench.data.partition import partition
from bench.host_sync import count_host_syncs
from bench.rundir import Cell
from tests.conftest import tiny_overrides

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def _epoch_syncs(tiny_dataset: Path, tmp_path: Path, batch_size: int) -> tuple[list[str], int]:
    cfg = config.load([QUICK], tiny_overrides(tiny_dataset, **{"protocol.batch_size": batch_size}))
    part = partition(cfg, tmp_path / f"s{batch_size}.json", tmp_path / f"h{batch_size}.json")
    dev = part.development
    data = DeviceData.from_arrays(dev.ids, dev.images, dev.masks, torch.device("cpu"))
    plan = part.cfg.plan("unet")
    split = FoldSplit.of(data, dev.folds, 0, plan.protocol)
    trainer = Trainer(plan, Cell("unet", 0, 0), data, split.steps_per_epoch)
    # AdamW's per-parameter step counters are host tensors on every device (fused AdamW on CUDA reads none):
    # reading them never waits for a GPU, so they are exempt
    def step_counter(t: object) -> bool:
        return any(t is state.get("step") for state in trainer.optimizer.state.values())

    with count_host_syncs(exempt=step_counter) as syncs:
        _, steps, finite = train_one_epoch(trainer, data, split, Cell("unet", 0, 0), 0)
    assert finite
    return syncs.calls, steps


def test_an_epoch_syncs_once_at_its_end_whatever_its_steps(tiny_dataset: Path, tmp_path: Path) -> None:
    few, few_steps = _epoch_syncs(tiny_dataset, tmp_path, 12)
    many, many_steps = _epoch_syncs(tiny_dataset, tmp_path, 4)
    assert many_steps >= 3 * few_steps  # the same images in three times the steps
    assert few == many, (few, many)  # no per-step sync
    assert few == ["Tensor.__bool__", "Tensor.__float__"]  # the epoch's one finiteness check and its mean loss
