"""``protocol.empty_head`` wired through the harness: config, the trainer's loss, the OOF decision, a tiny run
through the real CLI (artefacts, classifier.csv, the report section in Chromium) and ``salt-bench compare``."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from architectures import EMPTY_HEAD_DEFAULTS, names
from bench import classifier, cli, config, postprocess, predict, runner, stats
from bench.atomic import read_json
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.cell.trainer import Trainer
from bench.data import tgs
from bench.errors import BenchError
from bench.inference import from_network, to_network
from bench.metrics import tgs_precision
from bench.rundir import Cell, RunDir
from tests.conftest import tiny_overrides
from tests.test_report import CHROMEDRIVER, CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
QUICK = config.CONFIG_DIR / "quick.yaml"
HEAD = "{weight: 0.1, dropout: 0.2}"
ARCHS = ["unet", "linknet"]


def _cfg(data: Path, **extra: object) -> config.Config:
    return config.load([QUICK], tiny_overrides(data, **extra))


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m bench.cli`` of this checkout (whatever the installed package points at), in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


# --------------------------------------------------------------------------------------- config


def test_empty_head_is_off_in_the_shipped_profiles_and_kept_out_of_their_hash() -> None:
    for path in (QUICK, config.CONFIG_DIR / "benchmark.yaml"):
        cfg = config.load([path])
        assert cfg.protocol.empty_head is None
        assert "empty_head" not in config.protocol_dict(cfg)["protocol"]  # the hash of today's protocols is unchanged
        assert all("empty_head" not in cfg.plan(arch).model for arch in cfg.architectures)


def test_empty_head_is_typed_hashed_and_reaches_every_plan() -> None:
    base = config.load([QUICK])
    on = config.load([QUICK], [f"protocol.empty_head={HEAD}"])
    assert on.protocol.empty_head == config.EmptyHeadConfig(weight=0.1, dropout=0.2)
    assert config.EmptyHeadConfig().dropout == EMPTY_HEAD_DEFAULTS["dropout"]
    assert config.load([QUICK], ["protocol.empty_head.weight=0.3"]).protocol.empty_head == config.EmptyHeadConfig(0.3, 0.2)
    hashes = {config.protocol_hash(c) for c in (base, on, config.load([QUICK], ["protocol.empty_head.weight=0.3"]))}
    assert len(hashes) == 3
    for arch in on.architectures:
        plan = on.plan(arch)
        assert plan.model["empty_head"] == {"dropout": 0.2} and plan.protocol.empty_head.weight == 0.1
    tuned = config.load([QUICK], [f"protocol.empty_head={HEAD}", "architectures.unet.train.optimizer.lr=0.01"])
    assert tuned.plan("unet").protocol.empty_head == on.protocol.empty_head  # a recipe override keeps the head


@pytest.mark.parametrize(("override", "message"), [
    ("protocol.empty_head.weight=0", "protocol.empty_head.weight: 0.0 must be above 0"),
    ("protocol.empty_head.weight=-1", "protocol.empty_head.weight: -1.0 is below the minimum 0"),
    ("protocol.empty_head.weight=.nan", "protocol.empty_head.weight: expected a finite number"),
    ("protocol.empty_head.dropout=1", "protocol.empty_head.dropout: 1.0 must be below 1"),
    ("protocol.empty_head.dropout=lots", "protocol.empty_head.dropout: expected float"),
    ("protocol.empty_head.wieght=0.1", "unknown key 'protocol.empty_head.wieght'"),
    ("protocol.empty_head=3", "protocol.empty_head: expected a mapping, got int"),
    ("architectures.unet.empty_head={}", "architectures.unet.empty_head: not an option of unet"),
])
def test_bad_empty_head_is_one_line_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(BenchError) as err:
        config.load([QUICK], [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_bad_empty_head_through_the_cli(tmp_path: Path) -> None:
    done = _cli("run", "--config", str(QUICK), "--set", "protocol.empty_head.weight=0", "--out", str(tmp_path / "r"),
                cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"salt-bench: error: {QUICK} (with --set): protocol.empty_head.weight: 0.0 must be above 0 "
        "(protocol.empty_head: null turns the head off)"]
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------- the trainer's loss


@pytest.fixture(scope="module")
def device_data(tiny_dataset: Path) -> DeviceData:
    loaded = tgs.load(tiny_dataset)
    return DeviceData.from_arrays(loaded.ids, loaded.images, loaded.masks, torch.device("cpu"))


def _batch(data: DeviceData) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight images, salt and empty ones among them."""
    has_salt = data.masks.flatten(1).amax(1) > 0
    idx = torch.cat([torch.nonzero(has_salt).flatten()[:4], torch.nonzero(~has_salt).flatten()[:4]])
    return data.images[idx].float() / 255.0, data.masks[idx].float()


@pytest.mark.parametrize("arch", names())
def test_the_trainers_loss_adds_the_weighted_bce_and_its_gradient_reaches_the_encoder(
        arch: str, tiny_dataset: Path, device_data: DeviceData) -> None:
    weight = 0.5
    cfg = _cfg(tiny_dataset, **{"protocol.empty_head": "{weight: 0.5, dropout: 0.0}"})
    plan = cfg.plan(arch)
    trainer = Trainer(plan, Cell(arch, 0, 0), device_data, steps_per_epoch=1)
    model, p = trainer.model.train(), plan.protocol
    x, y = _batch(device_data)
    torch.manual_seed(1)  # the decoders' dropout draws
    total = trainer.objective(x, y, 0)

    # the same forward pass by hand, the same dropout draws (batch norm uses the batch's statistics either way)
    torch.manual_seed(1)
    xin = to_network((x - device_data.mean) / device_data.std, p.input)
    masks, head = model(xin)
    seg = trainer.loss.at(0)(from_network(masks, p.input, trainer.size), y)
    bce = F.binary_cross_entropy_with_logits(head[:, 0], (y.flatten(1).amax(1) > 0).float())
    torch.testing.assert_close(total, seg + weight * bce)

    encoder = list(model.encoder.parameters())
    g_total = torch.autograd.grad(total, encoder)
    g_seg = torch.autograd.grad(seg, encoder, retain_graph=True)
    g_bce = torch.autograd.grad(bce, encoder)
    for t, s, b in zip(g_total, g_seg, g_bce):
        torch.testing.assert_close(t, s + weight * b, rtol=1e-3, atol=1e-5)  # float32 summation order
    assert g_bce[0].abs().sum() > 0  # the stem, farthest from the head
    assert not torch.allclose(g_total[0], g_seg[0])

    before = {k: v.clone() for k, v in model.classification_head.state_dict().items()}
    trainer.step(x, y, 0)
    assert any(not torch.equal(before[k], v) for k, v in model.classification_head.state_dict().items())


def test_without_the_head_the_loss_is_the_segmentation_loss(tiny_dataset: Path, device_data: DeviceData) -> None:
    plan = _cfg(tiny_dataset).plan("unet")
    trainer = Trainer(plan, Cell("unet", 0, 0), device_data, steps_per_epoch=1)
    assert trainer.model.classification_head is None and trainer.head_weight is None
    x, y = _batch(device_data)
    logits = trainer.model.train()(to_network((x - device_data.mean) / device_data.std, plan.protocol.input))
    seg = trainer.loss.at(0)(from_network(logits, plan.protocol.input, trainer.size), y)
    torch.testing.assert_close(trainer.objective(x, y, 0), seg)


@pytest.mark.slow
def test_a_crossfit_cell_keeps_the_heads_probabilities_of_both_halves(tiny_dataset: Path, device_data: DeviceData,
                                                                      tmp_path: Path) -> None:
    cfg = _cfg(tiny_dataset, **{"protocol.empty_head": HEAD, "protocol.checkpoint": "crossfit", "protocol.epochs": 2})
    folds = np.arange(len(device_data.ids)) % 2
    metrics = train_cell(cfg.plan("linknet"), Cell("linknet", 0, 0), device_data, folds, tmp_path, progress=False)
    with np.load(tmp_path / "oof.npz") as z:
        assert z["head_probs"].shape == z["head_probs_no_tta"].shape == (int((folds == 0).sum()),)
        assert ((z["head_probs"] >= 0) & (z["head_probs"] <= 1)).all()
    assert 0 <= metrics.head_accuracy <= 1 and metrics.head_roc_auc is not None


# --------------------------------------------------------------------------------------- the OOF decision


@st.composite
def _oof(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 levels (N, 6, 6), bool truth, head probabilities, folds) with at least two folds."""
    n = draw(st.integers(4, 24))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 6, 6)) < rng.random((n, 1, 1)) * (rng.random((n, 1, 1)) < 0.6)
    noise = rng.integers(0, 256, (n, 6, 6))
    levels = np.where(truth, np.maximum(noise, 100), noise // 2).astype(np.uint8)
    head = np.clip(np.where(truth.any(axis=(1, 2)), 0.6, 0.3) + rng.normal(0, 0.3, n), 0, 1)
    folds = np.arange(n) % draw(st.integers(2, 3))
    return levels, truth, head, folds


@settings(max_examples=60, deadline=None)
@given(_oof())
def test_the_oof_chosen_head_cut_never_lowers_the_oof_score(case) -> None:
    """Pooled: the head's step scores at least what the masks score without it, and ``apply`` reproduces it.
    Cross-fitted: each fold's cut, chosen on the other folds, never lowers the score of those folds."""
    levels, truth, head, folds = case
    without = postprocess.decide(levels, truth)
    with_head = postprocess.decide(levels, truth, head_probs=head)
    assert (with_head.threshold, with_head.min_area, with_head.empty_max_prob) == (
        without.threshold, without.min_area, without.empty_max_prob)
    assert with_head.score_post >= without.score_post
    assert tgs_precision(truth, postprocess.apply(levels, with_head, head)).mean() == pytest.approx(with_head.score_post)
    if with_head.head_cut is None:
        assert with_head.score_post == without.score_post

    masks, decisions = postprocess.cross_fitted(levels, truth, folds, head_probs=head)
    for f, decision in decisions.items():
        chosen_on = folds != f
        uncut = dataclasses.replace(decision, head_cut=None)
        kept = tgs_precision(truth[chosen_on], postprocess.apply(levels[chosen_on], decision, head[chosen_on])).mean()
        assert kept >= tgs_precision(truth[chosen_on], postprocess.apply(levels[chosen_on], uncut)).mean() - 1e-12
        assert decision == postprocess.decide(levels[chosen_on], truth[chosen_on], head_probs=head[chosen_on])
        here = folds == f
        np.testing.assert_array_equal(masks[here], postprocess.apply(levels[here], decision, head[here]))


def test_a_head_that_knows_the_empty_images_is_cut_at_its_gap() -> None:
    """Masks with stray salt on every empty image; the head separates empty (0.1) from salt (0.9): its cut empties the
    empty images (the lowest grid cut at or above 0.1) and the score rises by their share."""
    truth = np.zeros((6, 4, 4), dtype=bool)
    truth[:3, :2, :2] = True
    levels = np.where(truth, 250, 0).astype(np.uint8)
    levels[3:, 0, 0] = 250  # one stray pixel, confidently salt: the peak cut cannot remove it
    head = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    d = postprocess.decide(levels, truth, head_probs=head)
    assert d.empty_max_prob is None and d.head_cut == 0.1
    assert d.score_min_area == pytest.approx(0.5) and d.score_post == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pass head_probs"):
        postprocess.apply(levels, d)
    with pytest.raises(ValueError, match=r"\(6,\)"):
        postprocess.apply(levels, d, head[:5])


# --------------------------------------------------------------------------------------- a run with the head, via the CLI


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny protocol (with a holdout) without the head (in-process) and with it (``salt-bench run``, whose
    report goes to <tmp>/with/report.html)."""
    root = tmp_path_factory.mktemp("head-runs")
    overrides = tiny_overrides(tiny_dataset, **{"data.holdout": 0.25})
    runner.run_grid(config.load([QUICK], overrides + ["name=tiny"]), root / "without", archs=ARCHS, progress=False)
    sets = [a for o in overrides + ["name=tiny-head", f"protocol.empty_head={HEAD}"] for a in ("--set", o)]
    done = _cli("run", "--config", str(QUICK), *sets, "--archs", ",".join(ARCHS), "--out", str(root / "with"), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"without": root / "without", "with": root / "with", "report": root / "with" / "report.html"}


def _pooled(run: Path, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of data.npz, mask levels, head probabilities) of an architecture's OOF, pooled fold by fold as the
    aggregation pools them."""
    index = {str(i): k for k, i in enumerate(RunDir(run).load_data().ids)}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for cell in sorted((run / "cells" / arch).iterdir()):
        with np.load(cell / "oof.npz") as z:
            parts.append((np.array([index[str(i)] for i in z["ids"]]), z["probs"], z["head_probs"]))
    return tuple(np.concatenate(p) for p in zip(*parts))


def _oof_head(run: Path, arch: str) -> np.ndarray:
    """The head's pooled OOF probabilities in data.npz order (what ``salt-bench predict`` decides on)."""
    cells = {arch: sorted((run / "cells" / arch).iterdir())}
    return predict.oof_mean(cells, RunDir(run).load_data().ids, "flip")[1]


@pytest.mark.slow
def test_a_run_with_the_head_writes_its_artefacts(runs: dict[str, Path]) -> None:
    run = runs["with"]
    assert read_json(run / "protocol.json")["protocol"]["protocol"]["empty_head"] == {"weight": 0.1, "dropout": 0.2}
    held = RunDir(run).load_holdout()
    for arch in ARCHS:
        for fold in (0, 1):
            cell = run / "cells" / arch / f"fold{fold}-seed0"
            metrics = read_json(cell / "metrics.json")
            assert metrics["arch_kwargs"]["empty_head"] == {"dropout": 0.2}
            assert 0 <= metrics["head_accuracy"] <= 1
            with np.load(cell / "oof.npz") as z:
                for key in ("head_probs", "head_probs_no_tta"):
                    assert z[key].shape == z["ids"].shape and z[key].dtype == np.float32
                    assert ((z[key] >= 0) & (z[key] <= 1)).all()
            state = torch.load(cell / "model.pt", weights_only=True)
            assert {"classification_head.3.weight", "classification_head.3.bias"} <= set(state)
        with np.load(run / "holdout" / f"{arch}-seed0.npz") as z:
            assert z["head_probs"].shape == (len(held.ids),)

    table = pd.read_csv(run / "classifier.csv", keep_default_na=False, na_values=[""])
    assert sorted(zip(table["arch"], table["split"])) == sorted((a, s) for a in ARCHS for s in ("oof", "holdout"))
    board = pd.read_csv(run / "leaderboard.csv", dtype={"head_cut": str}).set_index("arch")
    per_image = pd.read_csv(run / "per_image.csv", dtype={"id": str})
    data = RunDir(run).load_data()
    for arch in ARCHS:
        rows, levels, head = _pooled(run, arch)
        masks = data.masks[rows]
        empty = ~masks.any(axis=(1, 2))
        oof = table[(table["arch"] == arch) & (table["split"] == "oof")].iloc[0]
        judged = classifier.classifier_metrics(head, empty)
        assert (oof["accuracy"], oof["tp"], oof["tn"]) == (pytest.approx(judged["accuracy"]), judged["tp"], judged["tn"])
        probe = classifier.probe_table(head, empty, truth_masks=masks)
        assert oof["probe_score"] == pytest.approx(probe["probe_score"])
        assert oof["false_empty_cost"] == pytest.approx(probe["false_empty_cost"])
        listed = per_image[(per_image["arch"] == arch) & (per_image["split"] == "oof")].set_index("id")
        np.testing.assert_allclose(listed.loc[[str(i) for i in data.ids[rows]], "head_prob"], head, rtol=1e-6)
        hold = table[(table["arch"] == arch) & (table["split"] == "holdout")].iloc[0]
        # the classifier's holdout is the fold ensemble's, under the decisions applied to every holdout prediction
        assert hold["score_both_cuts"] == pytest.approx(board.loc[arch, "ensemble_score"])
        pooled_cut = postprocess.decide(levels, masks, head_probs=head).head_cut
        assert board.loc[arch, "head_cut"] == ("off" if pooled_cut is None else f"{pooled_cut:.2f}")
        assert oof["fold_head_cuts"].count(" ") == 1  # one cut (or "none") per fold


@pytest.mark.slow
def test_a_run_without_the_head_has_none_of_it(runs: dict[str, Path]) -> None:
    run = runs["without"]
    assert "empty_head" not in read_json(run / "protocol.json")["protocol"]["protocol"]
    with np.load(run / "cells" / "unet" / "fold0-seed0" / "oof.npz") as z:
        assert set(z.files) == {"ids", "probs", "probs_no_tta"}
    with np.load(run / "holdout" / "unet-seed0.npz") as z:
        assert "head_probs" not in z.files
    assert not (run / "classifier.csv").exists()
    assert "head_prob" not in pd.read_csv(run / "per_image.csv").columns
    assert "head_cut" not in pd.read_csv(run / "leaderboard.csv").columns


@pytest.mark.slow
def test_predict_uses_and_records_the_heads_cut(runs: dict[str, Path], tiny_dataset: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(runs["with"], tmp_path / "with"))
    predict.predict(run, arch="unet", evaluate_oof=True)
    entry = read_json(run / "postprocess.json")["unet@flip"]
    cells = {"unet": sorted((run / "cells" / "unet").iterdir())}
    levels, _ = predict.oof_mean(cells, RunDir(run).load_data().ids, "flip")
    expected = postprocess.decide(levels, RunDir(run).load_data().masks, head_probs=_oof_head(run, "unet"))
    assert entry["head_cut"] == expected.head_cut and entry["score_post"] == pytest.approx(expected.score_post)
    path = predict.predict(run, arch="linknet", tta="none", out=tmp_path / "submission.csv")
    assert len(pd.read_csv(path)) == len(tgs.load(tiny_dataset).test_ids())
    without = {"unet": sorted((runs["without"] / "cells" / "unet").iterdir())}
    assert predict.oof_mean(without, RunDir(runs["without"]).load_data().ids, "flip")[1] is None


@pytest.mark.slow
def test_the_report_has_the_head_section(runs: dict[str, Path], tmp_path: Path) -> None:
    html = runs["report"].read_text(encoding="utf-8")
    assert '<section id="head">' in html and '<a href="#head">7. Empty-vs-salt head</a>' in html
    for needle in ("The seed's probe", "What the head's cut is worth", "ROC curves of the head",
                   'id="T_probe"', 'id="T_head_confusion"', 'id="T_head_effect"', "salt-bench compare"):
        assert needle in html, needle
    assert '<h2><span class="num">8.</span>Cost vs score</h2>' in html  # later sections renumbered
    without = runner_report(runs["without"], tmp_path)
    assert '<section id="head">' not in without and 'href="#head"' not in without
    assert '<h2><span class="num">7.</span>Cost vs score</h2>' in without


def runner_report(run: Path, tmp_path: Path) -> str:
    from bench.report.build import build_report

    return build_report(run, tmp_path / f"{run.name}.html").read_text(encoding="utf-8")


@pytest.mark.browser
@pytest.mark.slow
def test_the_head_section_in_headless_chromium(runs: dict[str, Path]) -> None:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"headless browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(1400, 1000)
        driver.get(runs["report"].resolve().as_uri())
        section = driver.find_element(By.ID, "head")
        assert section.is_displayed()
        roc = section.find_element(By.CSS_SELECTOR, "img.fig")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", roc)
        assert len(section.find_elements(By.CSS_SELECTOR, "table.data")) == 3
        assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
        driver.set_window_size(1400, driver.execute_script("return document.documentElement.scrollHeight;") + 100)
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        assert section.screenshot(str(artifacts / "report-head.png"))
    finally:
        driver.quit()


# --------------------------------------------------------------------------------------- salt-bench compare


def _expected(a: Path, b: Path, arch: str) -> np.ndarray:
    """B - A per trained model (fold) and holdout image, from the two runs' per_image.csv."""
    frames = [pd.read_csv(r / "per_image.csv", dtype={"id": str}) for r in (a, b)]
    scores = [f[(f["arch"] == arch) & (f["split"] == "holdout")].set_index(["fold", "seed", "id"])["score"]
              for f in frames]
    common = scores[0].index.intersection(scores[1].index).sort_values()
    return scores[1].loc[common].to_numpy() - scores[0].loc[common].to_numpy()


@pytest.mark.slow
def test_compare_pairs_the_runs_by_model_and_image(runs: dict[str, Path], tmp_path: Path) -> None:
    a, b = runs["without"], Path(shutil.copytree(runs["with"], tmp_path / "with"))
    done = _cli("compare", str(a), str(b), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = b / "compare" / "without.csv"
    assert f"wrote {path}" in done.stdout and "paired by trained model and image" in done.stdout
    assert "the runs differ in: protocol.empty_head: absent -> {'dropout': 0.2, 'weight': 0.1}" in done.stdout
    table = pd.read_csv(path, keep_default_na=False, na_values=[""]).set_index("arch")
    assert list(table.index) == sorted(ARCHS) and set(table["split"]) == {"holdout"}
    assert set(table["head_a"]) == {"off"} and set(table["head_b"]) == {"dropout=0.2 weight=0.1"}
    n_held = len(RunDir(a).load_holdout().ids)
    for arch in ARCHS:
        diff = _expected(a, b, arch)
        row = table.loc[arch]
        assert row["n_images"] == n_held and row["n_models"] == 2 and len(diff) == 2 * n_held
        assert row["diff"] == pytest.approx(diff.mean())
        # two trained models (one seed) carry no claim: training noise is unmeasured
        assert np.isnan(row["p"]) and row["verdict"] == stats.TOO_FEW.format(r=2)
    html = runner_report(b, tmp_path)
    assert 'id="T_comparison"' in html and "against <code>without</code>" in html


@pytest.mark.slow
def test_compare_of_a_known_difference(runs: dict[str, Path], tmp_path: Path) -> None:
    """B's holdout scores for unet tampered to 1 everywhere: the difference is 1 - A's score per model and image."""
    a, b = runs["without"], Path(shutil.copytree(runs["with"], tmp_path / "with"))
    per_image = pd.read_csv(b / "per_image.csv", dtype={"id": str}, keep_default_na=False, na_values=[""])
    per_image.loc[(per_image["arch"] == "unet") & (per_image["split"] == "holdout"), "score"] = 1.0
    per_image.to_csv(b / "per_image.csv", index=False)
    manifest = read_json(b / "aggregate.json")  # the tampered table must read as current: re-record its digest
    manifest["tables"]["per_image.csv"] = hashlib.sha256((b / "per_image.csv").read_bytes()).hexdigest()
    (b / "aggregate.json").write_text(json.dumps(manifest))
    out = tmp_path / "table.csv"
    assert cli.main(["compare", str(a), str(b), "--out", str(out)]) == 0
    row = pd.read_csv(out).set_index("arch").loc["unet"]
    a_scores = pd.read_csv(a / "per_image.csv", dtype={"id": str})
    a_scores = a_scores[(a_scores["arch"] == "unet") & (a_scores["split"] == "holdout")]["score"]
    assert row["diff"] == pytest.approx(1 - a_scores.mean()) and row["score_b"] == 1.0


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


def _refusals(tmp: Path, a: Path) -> list[tuple[Path, str]]:
    """(a tampered copy of run A, the refusal comparing A with it must name)."""
    cases = []
    images = Path(shutil.copytree(a, tmp / "images"))
    with np.load(images / "data.npz") as z:
        arrays = dict(z)
    arrays["masks"][0, 0, 0] ^= 0x80
    np.savez_compressed(images / "data.npz", **arrays)
    cases.append((images, "hold different development images (masks differ)"))
    held = Path(shutil.copytree(a, tmp / "held"))
    with np.load(held / "holdout.npz") as z:
        arrays = dict(z)
    arrays["ids"] = arrays["ids"][::-1]
    np.savez_compressed(held / "holdout.npz", **arrays)
    cases.append((held, "hold different holdout images (ids differ)"))
    alone = Path(shutil.copytree(a, tmp / "alone"))
    shutil.rmtree(alone / "cells")
    cases.append((alone, "have no finished architecture in common"))
    cases.append((tmp / "nothing", "no such run directory"))
    (tmp / "plain").mkdir()
    cases.append((tmp / "plain", "not a salt-bench run directory (no protocol.json)"))
    cases.append((a / ".." / a.name, "are the same run"))
    return cases


@pytest.mark.slow
def test_compare_refuses_runs_on_other_images(runs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for other, message in _refusals(tmp_path, runs["without"]):
        assert cli.main(["compare", str(runs["without"]), str(other)]) == 2, other
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("salt-bench: error: ") and message in err[0], (other, err)
        assert not (other / "compare").exists() or other.resolve() == runs["without"].resolve()


@pytest.mark.slow
def test_compare_lists_every_protocol_and_recipe_difference(runs: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    other = Path(shutil.copytree(runs["without"], tmp_path / "other"))
    _edit_json(other / "protocol.json", lambda v: v["protocol"]["protocol"].update(epochs=3))
    _edit_json(other / "cells" / "unet" / "fold0-seed0" / "metrics.json", lambda v: v.update(arch_train={"batch_size": 4}))
    assert cli.main(["compare", str(runs["without"]), str(other), "--out", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "protocol.epochs: 2 -> 3" in out
    table = pd.read_csv(tmp_path / "t.csv").set_index("arch")
    assert "architectures.unet.train.batch_size: absent -> 4" in table.loc["unet", "differences"]
    assert "architectures.unet" not in table.loc["linknet", "differences"]
