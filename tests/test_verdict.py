"""The verdict is evidence: the holdout is locked, selection never reads what it scores, a cell's identity
is checked on resume, and the leaderboard carries the columns outside tools read."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import atomic, config, results, rundir, runner, stats
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.data import tgs
from bench.data.partition import partition
from bench.errors import BenchError
from bench.results import LEAD_COLUMNS
from bench.rundir import Cell, RunDir
from tests.conftest import tiny_overrides

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invert_holdout_masks(src: Path, dst: Path, holdout_ids: list[str]) -> None:
    """A copy of the data folder in which every holdout mask is its complement."""
    data = tgs.load(src)
    masks = data.masks.copy()
    for k, i in enumerate(data.ids):
        if i in holdout_ids:
            masks[k] = ~masks[k]
    tgs.write(dst, data.ids, data.images, masks, test_ids=data.test_ids(), test_images=data.test_images())


@pytest.mark.slow
def test_the_holdout_is_locked_inverting_its_masks_changes_no_cell(tiny_dataset: Path, tmp_path: Path) -> None:
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 1, "data.holdout": 0.25})
    cfg = config.load([QUICK], sets)
    first = RunDir(tmp_path / "first")
    runner.run_grid(cfg, first.path, archs=["unet"], progress=False)
    held = list(atomic.read_json(first.holdout_file)["ids"])
    assert len(held) == 12
    inverted = tmp_path / "inverted-data"
    _invert_holdout_masks(tiny_dataset, inverted, held)
    second = RunDir(tmp_path / "second")
    second.path.mkdir()
    for name in ("splits.json", "holdout.json"):  # the recorded split, reused as a user reuses `data folds` output
        shutil.copy(first.path / name, second.path / name)
    cfg2 = config.load([QUICK], tiny_overrides(inverted, **{"protocol.epochs": 1, "data.holdout": 0.25}))
    runner.run_grid(cfg2, second.path, archs=["unet"], progress=False)
    assert second.protocol_hash() != first.protocol_hash()  # the data changed, and the protocol says so
    for fold in (0, 1):
        cell = Cell("unet", fold, 0)
        for name in ("oof.npz", "history.csv", "model.pt"):
            assert _digest(first.cell_dir(cell) / name) == _digest(second.cell_dir(cell) / name), (fold, name)
    board1, board2 = (pd.read_csv(r.leaderboard_file).iloc[0] for r in (first, second))
    for column in ("fold_thresholds", "threshold", "oof_score", "min_area"):
        assert board1[column] == board2[column], column
    assert board1["holdout_score"] != board2["holdout_score"]  # the holdout itself is scored, once, at the end


def test_synthetic_holdout_is_extra_images_after_the_development_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SALT_BENCH_CACHE", str(tmp_path / "cache"))
    cfg = config.load([QUICK], ["data.n_train=40", "data.n_test=0", "data.n_holdout=16", "protocol.folds=2"])
    part = partition(cfg, tmp_path / "splits.json", tmp_path / "holdout.json")
    dev, held = part.development, part.holdout
    assert len(dev.ids) == 40 and len(held.ids) == 16
    assert not set(dev.ids) & set(held.ids)
    smaller = partition(config.load([QUICK], ["data.n_train=40", "data.n_test=0", "data.n_holdout=0"]),
                        tmp_path / "s2.json", tmp_path / "h2.json").development
    assert np.array_equal(smaller.ids, dev.ids) and np.array_equal(smaller.masks, dev.masks)  # same development images


@pytest.mark.slow
def test_a_killed_cell_resumed_with_a_changed_recipe_restarts_under_the_new_one(tiny_dataset: Path, tmp_path: Path,
                                                                                   capsys) -> None:
    sets = tiny_overrides(tiny_dataset, **{"protocol.epochs": 2})
    old = config.load([QUICK], sets)
    new = config.load([QUICK], sets + ["architectures.unet.train.optimizer.lr=0.0005"])
    part = partition(old, tmp_path / "splits.json", tmp_path / "holdout.json")
    dev = part.development
    data = DeviceData.from_arrays(dev.ids, dev.images, dev.masks, torch.device("cpu"))
    cell, out = Cell("unet", 0, 0), tmp_path / "cell"

    class Killed(Exception):
        pass

    def kill(epoch: int, score: float) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):  # killed in epoch 1, after epoch 0 was checkpointed under the old recipe
        train_cell(part.cfg.plan("unet"), cell, data, dev.folds, out, on_epoch=kill, progress=False)
    assert (out / rundir.CHECKPOINT).is_file()
    new_cfg = config.from_dict({**new.to_dict(), "data": part.cfg.to_dict()["data"]})
    resumed = train_cell(new_cfg.plan("unet"), cell, data, dev.folds, out, progress=False)
    assert "restarts from epoch 0" in capsys.readouterr().out
    fresh = train_cell(new_cfg.plan("unet"), cell, data, dev.folds, tmp_path / "fresh", progress=False)
    assert resumed.cell_hash == fresh.cell_hash and resumed.recipe == "lr=0.0005"
    history = pd.read_csv(out / rundir.HISTORY)
    assert history.equals(pd.read_csv(tmp_path / "fresh" / rundir.HISTORY))
    assert _digest(out / rundir.OOF) == _digest(tmp_path / "fresh" / rundir.OOF)


@pytest.mark.slow
def test_crossfit_scores_each_half_by_the_epoch_chosen_on_the_other(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = config.load([QUICK], tiny_overrides(tiny_dataset, **{"protocol.epochs": 3, "protocol.checkpoint": "crossfit",
                                                                "data.holdout": 0}))
    part = partition(cfg, tmp_path / "splits.json", tmp_path / "holdout.json")
    dev = part.development
    data = DeviceData.from_arrays(dev.ids, dev.images, dev.masks, torch.device("cpu"))
    metrics = train_cell(part.cfg.plan("unet"), Cell("unet", 0, 0), data, dev.folds, tmp_path / "c", progress=False)
    history = pd.read_csv(tmp_path / "c" / rundir.HISTORY).set_index("epoch")
    kept = metrics.kept_epochs
    assert kept["half_a_by"] == int(history["val_score_b"].idxmax())  # half A is scored by B's choice
    assert kept["half_b_by"] == int(history["val_score_a"].idxmax())
    n = len(dev.folds[dev.folds == 0])
    n_a = n // 2
    expected = (n_a * history.loc[kept["half_a_by"], "val_score_a"]
                + (n - n_a) * history.loc[kept["half_b_by"], "val_score_b"]) / n
    assert metrics.val_score == pytest.approx(expected)


@pytest.mark.slow
def test_leaderboard_leads_with_the_columns_outside_tools_read(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = config.load([QUICK], tiny_overrides(tiny_dataset, **{"protocol.epochs": 1, "data.holdout": 0.25}))
    board = runner.run_grid(cfg, tmp_path / "run", archs=["unet", "linknet"], progress=False)
    assert list(board.columns[: len(LEAD_COLUMNS)]) == LEAD_COLUMNS
    on_disk = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert list(on_disk.columns[: len(LEAD_COLUMNS)]) == LEAD_COLUMNS
    assert set(on_disk["score_source"]) == {"holdout"}
    assert np.allclose(on_disk["score"], on_disk["holdout_score"])
    assert np.allclose(on_disk["optimism"], on_disk["oof_score"] - on_disk["holdout_score"])
    assert np.allclose(on_disk["ensemble_gain"], on_disk["ensemble_score"] - on_disk["holdout_score"])
    assert set(on_disk["recipe"]) == {"shared"}
    # 2 folds x 1 seed: two trained models per architecture claim no P(best), rank or comparison
    assert on_disk["p_best"].isna().all() and on_disk["rank_lo"].isna().all()
    assert (on_disk["n_models"] == 2).all()
    for row in on_disk.itertuples():
        assert row.verdict.startswith(stats.NOT_LEARNED) or row.verdict == stats.TOO_FEW.format(r=2)
    # the ranked score is the mean of the models' own holdout scores; the ensemble is scored beside it
    per_image = pd.read_csv(tmp_path / "run" / "per_image.csv", dtype={"id": str})
    models = per_image[per_image["split"] == "holdout"]
    assert set(models["fold"]) == {0, 1} and set(per_image.loc[per_image["split"] == "ensemble", "fold"]) == {-1}
    means = models.groupby("arch")["score"].mean()
    assert np.allclose(on_disk.set_index("arch")["score"], means.loc[on_disk["arch"]])


def _four_models(tiny_dataset: Path, tmp_path: Path) -> tuple[config.Config, RunDir]:
    """unet and linknet, 2 folds x 2 seeds, with a holdout: four trained models each."""
    cfg = config.load([QUICK], tiny_overrides(tiny_dataset, **{"protocol.epochs": 1, "data.holdout": 0.25,
                                                                "protocol.seeds": "[0, 1]"}))
    run = RunDir(tmp_path / "run")
    runner.run_grid(cfg, run.path, archs=["unet", "linknet"], progress=False)
    return cfg, run


@pytest.mark.slow
def test_partial_runs_rank_the_complete_and_say_what_the_others_lack(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg, run = _four_models(tiny_dataset, tmp_path)
    board = pd.read_csv(run.leaderboard_file)
    assert (board["n_models"] == 4).all() and set(board["score_source"]) == {"holdout"}
    manifest = atomic.read_json(run.aggregate_file)
    assert set(manifest["cells"]) == {f"{a}/fold{f}-seed{s}" for a in ("unet", "linknet") for f in (0, 1)
                                      for s in (0, 1)}
    assert manifest["variance"]["unet"]["n_models"] == 4 and manifest["incomplete"] == {}
    # a retrained fold of linknet: its old holdout prediction is not scored, linknet is listed as incomplete
    metrics_path = run.cell_dir(Cell("linknet", 1, 1)) / rundir.METRICS
    record = atomic.read_json(metrics_path)
    record["cell_hash"] = "0" * 16
    atomic.write_json(metrics_path, record)
    board = results.current(run)[0].set_index("arch")
    assert np.isnan(board.loc["linknet", "score"]) and board.loc["unet", "score_source"] == "holdout"
    assert board.loc["linknet", "verdict"] == "incomplete: seed 1 has no current holdout prediction"
    # a cell not trained: named
    (run.cell_dir(Cell("linknet", 0, 0)) / rundir.METRICS).unlink()
    board = results.current(run)[0].set_index("arch")
    assert board.loc["linknet", "verdict"].startswith("incomplete: fold0-seed0 not trained")
    # no seed finished by every architecture: one line naming what is missing
    for fold in (0, 1):
        (run.cell_dir(Cell("unet", fold, 1)) / rundir.METRICS).unlink()
    (run.cell_dir(Cell("linknet", 1, 0)) / rundir.METRICS).unlink()
    with pytest.raises(BenchError, match="no seed has finished cells of every architecture.*fold1-seed1 not trained"):
        results.aggregate(run)


@pytest.mark.slow
def test_the_aggregate_is_checked_against_what_it_was_built_from(tiny_dataset: Path, tmp_path: Path) -> None:
    _, run = _four_models(tiny_dataset, tmp_path)
    first = run.leaderboard_file.read_text()
    run.leaderboard_file.write_text("garbage\n")  # a table changed behind the record: rebuilt, not shown
    board, _ = results.current(run)
    assert run.leaderboard_file.read_text() == first and len(board) == 2
