"""`salt-bench predict` on a tiny real run: the submission round-trips, its score is the in-memory score, the
post-processing decision is recorded and matches the leaderboard, ensembles work, and bad input is a one-line error."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from bench import cli, config, postprocess, predict, runner, runtime
from bench.atomic import read_json, write_npz
from bench.cell.data import DeviceData
from bench.cell.prediction import load_model
from bench.data import tgs
from bench.data.rle import rle_decode
from bench.inference import predict_outputs
from bench.metrics import best_threshold, tgs_score
from bench.postprocess import Decision
from bench.rundir import Ensembles, RunDir
from tests.conftest import tiny_overrides

QUICK = config.CONFIG_DIR / "quick.yaml"
CLI = [sys.executable, "-m", "bench.cli"]
DECISION_FIELDS = ("threshold", "min_area", "empty_max_prob", "score_raw", "score_min_area", "score_post")


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    runner.run_grid(config.load([QUICK], tiny_overrides(tiny_dataset)), run_dir, archs=["unet", "linknet"], progress=False)
    return run_dir


def _copy_run(run_dir: Path, dest: Path) -> Path:
    """A private copy of the run without anything predict writes, for tests that change or break it."""
    return Path(shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("postprocess.json", "ensembles.csv",
                                                                               "submission.csv")))


def _read_submission(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "rle_mask"]
    assert all(len(r) == 2 for r in rows[1:])
    return [r[0] for r in rows[1:]], np.stack([rle_decode(r[1], (101, 101)) for r in rows[1:]])


def _sample_ids(data_dir: Path) -> list[str]:
    return pd.read_csv(data_dir / "sample_submission.csv", dtype=str)["id"].tolist()


def _hidden_masks(data_dir: Path, ids: list[str]) -> np.ndarray:
    with np.load(data_dir / "synthetic_test_masks.npz") as z:
        index = {str(i): k for k, i in enumerate(z["ids"])}
        return z["masks"][[index[i] for i in ids]]


def _in_memory_levels(run_dir: Path, data_dir: Path, members: list[str], tta: str) -> np.ndarray:
    """The test probability levels recomputed here from the cells' models, step by step, in the run's arithmetic
    (``runtime.precision``), as ``salt-bench predict`` applies it."""
    cfg = RunDir(run_dir).config()
    arithmetic = runtime.arithmetic(cfg.runtime, torch.device("cpu"))
    data = RunDir(run_dir).load_data()
    stats = DeviceData.from_arrays(data.ids, data.images, data.masks, torch.device("cpu"))
    images = torch.from_numpy(tgs.load(data_dir).test_images()).unsqueeze(1)
    per_member = []
    for arch in members:
        cells = [run_dir / "cells" / arch / f"fold{f}-seed{s}"
                 for s in cfg.protocol.seeds for f in range(cfg.protocol.folds)]
        probs = [predict_outputs(load_model(c, torch.device("cpu")), images, cfg.protocol.input, stats.mean, stats.std,
                                 arithmetic, tta=tta == "flip").masks for c in cells]
        per_member.append(torch.stack(probs).mean(0))
    return (torch.stack(per_member).mean(0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _in_memory_masks(run_dir: Path, data_dir: Path, members: list[str], tta: str) -> np.ndarray:
    """The submission's masks recomputed here: in-memory levels under the decision recorded in postprocess.json."""
    entry = read_json(run_dir / "postprocess.json")[f"{'+'.join(sorted(members))}@{tta}"]
    decision = Decision(**{k: entry[k] for k in DECISION_FIELDS})
    return postprocess.apply(_in_memory_levels(run_dir, data_dir, members, tta), decision)


@pytest.mark.slow
def test_cli_submission_round_trips_and_scores_like_the_in_memory_predictions(tiny_run: Path,
                                                                             tiny_dataset: Path) -> None:
    proc = subprocess.run([*CLI, "predict", str(tiny_run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rank1 = pd.read_csv(tiny_run / "leaderboard.csv").sort_values("rank")["arch"].iloc[0]
    assert proc.stdout.startswith(f"{rank1} (tta flip)")

    ids, masks = _read_submission(tiny_run / "submission.csv")
    assert ids == _sample_ids(tiny_dataset)
    assert masks.shape == (len(ids), 101, 101)
    expected = _in_memory_masks(tiny_run, tiny_dataset, [rank1], "flip")
    np.testing.assert_array_equal(masks, expected)
    hidden = _hidden_masks(tiny_dataset, ids)
    assert tgs_score(hidden, masks) == pytest.approx(tgs_score(hidden, expected), abs=1e-12)


@pytest.mark.slow
def test_cli_submission_with_salt_round_trips(tiny_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    """Two-epoch models lose to all-empty on OOF, so their own decision empties every test mask. Here the OOF
    probabilities are replaced by ones that make the OOF-chosen threshold the median test probability, so the
    submission carries real, ragged masks through RLE and back."""
    run_dir = _copy_run(tiny_run, tmp_path / "run")
    levels = _in_memory_levels(run_dir, tiny_dataset, ["unet"], "none")
    grid = np.round(np.linspace(0.05, 0.95, 19), 2)
    threshold = float(grid[np.argmin(np.abs(grid * 255 - np.median(levels)))])
    data = RunDir(run_dir).load_data()
    index = {str(i): k for k, i in enumerate(data.ids)}
    for oof in run_dir.glob("cells/unet/fold*-seed0/oof.npz"):
        with np.load(oof) as z:
            ids = z["ids"]
        truth = data.masks[[index[str(i)] for i in ids]]
        crafted = np.where(truth, 255, postprocess.level(threshold)).astype(np.uint8)
        write_npz(oof, ids=ids, probs=crafted, probs_no_tta=crafted)
    out = tmp_path / "salt.csv"
    proc = subprocess.run([*CLI, "predict", str(run_dir), "--arch", "unet", "--tta", "none", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_json(run_dir / "postprocess.json")["unet@none"]["threshold"] == threshold

    ids, masks = _read_submission(out)
    assert ids == _sample_ids(tiny_dataset)
    assert 0.02 < masks.mean() < 0.98 and masks.any(axis=(1, 2)).sum() >= len(ids) // 2
    expected = _in_memory_masks(run_dir, tiny_dataset, ["unet"], "none")
    np.testing.assert_array_equal(masks, expected)
    hidden = _hidden_masks(tiny_dataset, ids)
    assert tgs_score(hidden, masks) == pytest.approx(tgs_score(hidden, expected), abs=1e-12)


def test_submission_text_encodes_every_mask_in_order() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((5, 101, 101)) > rng.random((5, 1, 1))
    masks[1] = False
    masks[3] = True
    ids = ["b2", "a1", "c3", "e5", "d4"]
    text = predict.submission_text(ids, masks)
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["id", "rle_mask"] and [r[0] for r in rows[1:]] == ids
    assert rows[2][1] == "" and rows[4][1] == "1 10201"
    np.testing.assert_array_equal(np.stack([rle_decode(r[1]) for r in rows[1:]]), masks)


@pytest.mark.slow
def test_run_decision_is_recorded_and_matches_the_leaderboard(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(tiny_run, tmp_path / "run")
    assert cli.main(["predict", str(run_dir), "--arch", "unet", "--evaluate-oof"]) == 0
    entry = read_json(run_dir / "postprocess.json")["unet@flip"]
    assert entry["members"] == ["unet"] and entry["tta"] == "flip" and entry["n_images"] == 48
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("arch")
    assert entry["threshold"] == board.loc["unet", "threshold"]
    assert entry["score_raw"] == pytest.approx(board.loc["unet", "oof_score_pooled_threshold"], abs=1e-12)
    assert entry["score_raw"] <= entry["score_post"]
    data = RunDir(run_dir).load_data()
    cells = predict.cell_dirs(RunDir(run_dir), RunDir(run_dir).config(), predict.Selection(("unet",), "flip"),
                              need_models=False)
    levels, _ = predict.oof_mean(cells, data.ids, "flip")
    decision = Decision(**{k: entry[k] for k in DECISION_FIELDS})
    rescored = tgs_score(data.masks, postprocess.apply(levels, decision))
    assert rescored == pytest.approx(entry["score_post"], abs=1e-12)


@pytest.mark.slow
def test_ensemble_predicts_and_is_evaluated_on_oof(tiny_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(tiny_run, tmp_path / "run")
    out = tmp_path / "ens.csv"
    assert cli.main(["predict", str(run_dir), "--ensemble", "unet,linknet", "--tta", "none", "--out", str(out)]) == 0
    ids, masks = _read_submission(out)
    assert ids == _sample_ids(tiny_dataset)
    np.testing.assert_array_equal(masks, _in_memory_masks(run_dir, tiny_dataset, ["unet", "linknet"], "none"))

    data = RunDir(run_dir).load_data()
    cfg = RunDir(run_dir).config()
    member = {a: predict.oof_mean(predict.cell_dirs(RunDir(run_dir), cfg, predict.Selection((a,), "none"), need_models=False),
                                  data.ids, "none")[0].astype(np.float64) for a in ("unet", "linknet")}
    mean_levels = np.round((member["unet"] + member["linknet"]) / 2).astype(np.uint8)
    entry = read_json(run_dir / "postprocess.json")["linknet+unet@none"]
    assert entry["threshold"] == best_threshold(mean_levels, data.masks)[0]

    for args in (["--ensemble", "linknet,unet"], ["--arch", "unet"], ["--ensemble", "unet,linknet"]):
        assert cli.main(["predict", str(run_dir), *args, "--tta", "none", "--evaluate-oof"]) == 0
    table = pd.read_csv(run_dir / "ensembles.csv")
    assert tuple(table.columns) == Ensembles.COLUMNS
    assert sorted(table["members"]) == ["linknet+unet", "unet"], "re-evaluating replaces the row"
    row = table.set_index("members").loc["linknet+unet"]
    assert row["tta"] == "none" and row["n_images"] == 48
    for k in ("threshold", "min_area", "score_raw", "score_post"):
        assert row[k] == pytest.approx(entry[k], abs=1e-12)
    assert list(table["score_post"]) == sorted(table["score_post"], reverse=True)
    assert (table["score_post"] >= table["score_raw"]).all()


def _png(path: Path, size: int) -> None:
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(path)


def _point_run_at(run_dir: Path, data_dir: Path) -> None:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["source"] = str(data_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _break_model(run_dir: Path, data_dir: Path) -> list[str]:
    (run_dir / "cells" / "linknet" / "fold1-seed0" / "model.pt").unlink()
    return ["--arch", "linknet"]


def _drop_cell(run_dir: Path, data_dir: Path) -> list[str]:
    shutil.rmtree(run_dir / "cells" / "unet" / "fold1-seed0")
    return ["--ensemble", "linknet,unet"]


def _wrong_size_image(run_dir: Path, data_dir: Path) -> list[str]:
    ident = _sample_ids(data_dir)[3]
    _png(data_dir / "test" / "images" / f"{ident}.png", 64)
    _point_run_at(run_dir, data_dir)
    return ["--arch", "unet"]


def _id_not_in_sample(run_dir: Path, data_dir: Path) -> list[str]:
    _png(data_dir / "test" / "images" / "zz-stray.png", 101)
    _point_run_at(run_dir, data_dir)
    return ["--arch", "unet"]


def _unknown_arch(run_dir: Path, data_dir: Path) -> list[str]:
    return ["--arch", "pspnet"]


@pytest.mark.slow
@pytest.mark.parametrize("breaks, needles", [
    (_break_model, ["cells/linknet/fold1-seed0", "model.pt"]),
    (_drop_cell, ["cells/unet/fold1-seed0", "not finished"]),
    (_wrong_size_image, ["test/images/", "wrong size 64x64"]),
    (_id_not_in_sample, ["zz-stray.png", "sample_submission.csv"]),
    (_unknown_arch, ["cells/pspnet", "trained: linknet, unet"]),
], ids=["missing-model", "missing-cell", "wrong-size-test-image", "id-not-in-sample-submission", "unknown-arch"])
def test_bad_input_is_one_line_and_writes_nothing(breaks, needles: list[str], tiny_run: Path, tiny_dataset: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _copy_run(tiny_run, tmp_path / "run")
    data_dir = Path(shutil.copytree(tiny_dataset, tmp_path / "data"))
    args = breaks(run_dir, data_dir)
    out = tmp_path / "sub.csv"
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("salt-bench: error: "), err
    for needle in needles:
        assert needle in err[0]
    assert not out.exists()
    assert not (run_dir / "postprocess.json").exists()


def test_not_a_run_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere: no such run directory" in err[0]
    (tmp_path / "empty").mkdir()
    assert cli.main(["predict", str(tmp_path / "empty")]) == 2
    assert "config.yaml: missing" in capsys.readouterr().err
