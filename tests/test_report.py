"""The HTML report built from a real (tiny, CPU) run: content, escaping, partial runs, the CLI, and a
headless Chromium that opens the file and checks it renders offline without errors."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import config as bconfig
from bench import runner
from bench.data import synthetic
from bench.errors import BenchError
from bench.report.build import build_report
from bench.report.sections import SECTIONS, head

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SECTION_IDS = [s.ID for s in SECTIONS if s is not head]  # the head's only in runs trained with it
EVIL_NAME = "<img src=x onerror=alert(1)>"  # a directory name cannot hold "/", so no closing tag here


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two architectures x two folds x one epoch on 48 synthetic images, trained by the real engine,
    plus a small Optuna study in run_dir/tuning so section 9 has something to draw."""
    import optuna

    root = tmp_path_factory.mktemp("report-run")
    data = synthetic.write_dataset(root / "data", n_train=48, n_test=8, seed=0)
    cfg = bconfig.load([bconfig.CONFIG_DIR / "quick.yaml"], overrides=[
        f"data.source={data}", "protocol.folds=2", "protocol.epochs=1", "protocol.batch_size=8",
        "protocol.model.encoder=tu-test_resnet", "runtime.device=cpu", "name=tiny",
    ])
    cfg.architectures = {"unet": {}, "linknet": {}}
    out = root / "tiny"
    runner.run_grid(cfg, out, progress=False)
    storage = f"sqlite:///{out / 'tuning' / 'unet.db'}"
    (out / "tuning").mkdir()
    study = optuna.create_study(study_name="tune-unet", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True) + t.suggest_int("depth", 1, 4), n_trials=6)
    return out


@pytest.fixture(scope="session")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(run_dir, tmp_path_factory.mktemp("report") / "index.html")


def _copy(run_dir: Path, dest: Path) -> Path:
    """A scratch copy of the run (with the same mtimes) that a test may cut down or tamper with."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("tuning"))
    return dest


@pytest.mark.slow
def test_report_has_every_section_and_no_outside_reference(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, flags=re.I)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:60] for r in refs if not r.startswith(("data:", "#"))]
    assert not re.search(r"https?://|url\(|@import|<script|<link", html, flags=re.I)
    for needle in ("tiny", "unet", "linknet", "tu-test_resnet", "tune-unet", "protocol hash", "crossed random effects",
                   "Satterthwaite", "Holm", "±0.01 TGS points", "Variance components"):
        assert needle in html
    assert html.count("data:image/png;base64,") >= 5 + 2 + 2  # figures, tuning plots, gallery tiles


def _answer(html: str) -> str:
    """The answer paragraph at the top, as text."""
    block = html[html.index('<div class="answer">'):]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", block[:block.index("</div>")])).strip()


@pytest.mark.slow
def test_answer_states_the_estimand_and_claims_nothing_from_two_models(run_dir: Path, report: Path) -> None:
    import json

    import pandas as pd

    manifest = json.loads((run_dir / "aggregate.json").read_text())
    board = pd.read_csv(run_dir / "leaderboard.csv")
    assert manifest["n_models"] == 2 and board["p_best"].isna().all()  # one seed, two folds: too few to compare
    answer = _answer(report.read_text(encoding="utf-8"))
    assert ("The score is the expected locked-holdout TGS score of one model trained by the protocol: the mean over "
            f"2 trained models per architecture, on {manifest['n_ranked_images']} images.") in answer
    best = board.iloc[0]
    assert f"{best['arch']} ranks first with {best['score']:.4f} (95% CI {best['ci_lo']:.4f} to {best['ci_hi']:.4f}" in answer
    assert f"fold ensemble scores {best['ensemble_score']:.4f} on the holdout" in answer
    assert f"Predicting no salt anywhere scores {manifest['all_empty_holdout']:.4f}" in answer
    assert "P(best)" not in answer and "rank interval" not in answer and "unresolved" not in answer


@pytest.mark.slow
def test_each_trained_model_is_a_point_and_their_mean_the_score(run_dir: Path) -> None:
    import pandas as pd

    from bench.report.load import load_run

    run = load_run(run_dir)
    models = run.model_scores
    assert sorted(map(tuple, models[["arch", "fold", "seed"]].to_numpy().tolist())) == [
        (a, f, 0) for a in ("linknet", "unet") for f in (0, 1)]
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("arch")
    for arch, mean in models.groupby("arch")["score"].mean().items():
        assert mean == pytest.approx(board.at[arch, "score"], abs=1e-12)


def test_every_section_folder_is_registered_once_under_its_id() -> None:
    """Adding a section is one folder and one registry line: a folder left out of SECTIONS, or an ID that names no
    folder, fails here rather than silently missing from the page."""
    from bench.report import sections

    folders = {p.parent.name for p in Path(sections.__file__).parent.glob("*/part.html.j2")}
    ids = [s.ID for s in SECTIONS]
    assert len(ids) == len(set(ids)) and set(ids) == folders
    assert ids[:3] == ["header", "leaderboard", "verdict"] and ids.index("head") == ids.index("coverage") + 1


def test_verdict_matrix_reads_both_ways_and_escapes_names() -> None:
    import pandas as pd

    from bench.report.sections.verdict import verdict_matrix

    evil = "<b>x</b>"
    pairs = pd.DataFrame({"arch": ["a", "a", evil], "other": [evil, "c", "c"], "diff": [0.02, 0.03, 0.01],
                          "verdict": ["better", "equivalent", "unresolved"]})
    html = verdict_matrix(pairs, ["a", evil, "c", "not compared"])
    assert "<b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "not compared" not in html
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)[1:]]
    assert rows == [["a", "—", "better +0.0200", "equivalent +0.0300"],
                    ["&lt;b&gt;x&lt;/b&gt;", "worse -0.0200", "—", "unresolved +0.0100"],
                    ["c", "equivalent -0.0300", "unresolved -0.0100", "—"]]


@pytest.mark.slow
def test_leaderboard_matches_run_and_highlights_best(run_dir: Path, report: Path) -> None:
    import pandas as pd

    board = pd.read_csv(run_dir / "leaderboard.csv")
    html = report.read_text(encoding="utf-8")
    table = html[html.index('id="T_leaderboard"'):]
    for score in board["score"]:
        assert f"{score:.4f}" in table
    assert "background-color: #d8f0dc" in html  # the best-value highlight is emitted


@pytest.mark.slow
def test_escapes_ids_run_name_and_config_name(run_dir: Path, tmp_path: Path, browser) -> None:
    evil = _copy(run_dir, tmp_path / EVIL_NAME)
    for name in ("leaderboard.csv", "per_image.csv", "gallery.npz"):
        (evil / name).unlink()
    with np.load(evil / "data.npz") as z:
        arrays = dict(z)
    rename = {str(i): f"<script>alert({k})</script>" for k, i in enumerate(arrays["ids"])}
    arrays["ids"] = np.array([rename[str(i)] for i in arrays["ids"]])
    np.savez_compressed(evil / "data.npz", **arrays)
    for oof in evil.glob("cells/*/*/oof.npz"):
        with np.load(oof) as z:
            cell = dict(z)
        cell["ids"] = np.array([rename[str(i)] for i in cell["ids"]])
        np.savez_compressed(oof, **cell)
    cfg = yaml.safe_load((evil / "config.yaml").read_text())
    cfg["name"] = "<script>alert('config')</script>"
    (evil / "config.yaml").write_text(yaml.safe_dump(cfg))

    html = build_report(evil, tmp_path / "evil.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(&#39;config&#39;)&lt;/script&gt;" in html
    assert re.search(r"&lt;script&gt;alert\(\d+\)&lt;/script&gt;", html)  # gallery ids, escaped
    if browser is None:
        return
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get((tmp_path / "evil.html").as_uri())
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.find_element(By.TAG_NAME, "h1").text == EVIL_NAME


@pytest.mark.slow
def test_partial_run_single_arch_single_fold(run_dir: Path, tmp_path: Path) -> None:
    part = _copy(run_dir, tmp_path / "partial")
    shutil.rmtree(part / "cells" / "linknet")
    shutil.rmtree(part / "cells" / "unet" / "fold1-seed0")
    html = build_report(part, tmp_path / "partial.html").read_text(encoding="utf-8")
    assert "3 cells of the configured grid have no results yet" in html
    for cell in ("linknet · fold 0 · seed 0", "linknet · fold 1 · seed 0", "unet · fold 1 · seed 0"):
        assert cell in html
    assert "1 of 4 finished" in html
    assert 'id="T_significance"' not in html and 'id="T_verdict_matrix"' not in html
    assert "No pairwise verdict: a comparison needs at least two architectures" in html or "No comparison is claimed" in html
    assert "(one fold: no std)" in html and "n/a" in html[html.index('id="T_leaderboard"'):]
    assert "no tuning studies in this run" in html
    assert "linknet" not in html[html.index('id="T_leaderboard"'):html.index('id="verdict"')]


@pytest.mark.slow
def test_incomplete_architecture_listed_with_what_it_lacks(run_dir: Path, tmp_path: Path) -> None:
    part = _copy(run_dir, tmp_path / "incomplete")
    shutil.rmtree(part / "cells" / "linknet" / "fold1-seed0")
    html = build_report(part, tmp_path / "incomplete.html").read_text(encoding="utf-8")
    assert "Not ranked (incomplete), listed at the bottom of the leaderboard:" in html
    assert "<li>linknet: fold1-seed0 not trained</li>" in html
    board = html[html.index('id="T_leaderboard"'):html.index('id="verdict"')]
    rows = re.findall(r"<tr>(.*?)</tr>", board, flags=re.S)
    assert "unet" in rows[1] and "linknet" in rows[2] and "incomplete: fold1-seed0 not trained" in rows[2]
    assert "linknet" not in _answer(html)


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(f.relative_to(root)): (f.stat().st_mtime_ns, f.read_bytes()) for f in root.rglob("*") if f.is_file()}


@pytest.mark.slow
def test_the_loader_only_reads_and_the_report_command_refreshes_a_stale_run(run_dir: Path, tmp_path: Path) -> None:
    """A run with a fold removed after its aggregation: loading it writes nothing (it says how to bring it up to
    date); ``build_report`` (``salt-bench report``) aggregates it again, then the loader reads the new tables."""
    from bench.report.load import load_run

    part = _copy(run_dir, tmp_path / "stale")
    shutil.rmtree(part / "cells" / "linknet" / "fold1-seed0")
    before = _snapshot(part)
    with pytest.raises(BenchError, match=r"aggregate\.json: missing or older than the run's finished cells; "
                                         r"`salt-bench report .*stale` aggregates the run again"):
        load_run(part)
    assert _snapshot(part) == before
    (part / "aggregate.json").unlink()
    before = _snapshot(part)
    with pytest.raises(BenchError, match=r"aggregate\.json: missing or older"):
        load_run(part)
    assert _snapshot(part) == before

    build_report(part, tmp_path / "stale.html")
    after = _snapshot(part)
    assert after["leaderboard.csv"] != before["leaderboard.csv"] and "aggregate.json" in after
    board = load_run(part).board.set_index("arch")
    assert board.loc["linknet", "verdict"] == "incomplete: fold1-seed0 not trained"
    assert _snapshot(part) == after, "a current run is read as it is"


@pytest.mark.slow
def test_run_without_finished_cells(run_dir: Path, tmp_path: Path) -> None:
    empty = _copy(run_dir, tmp_path / "empty")
    shutil.rmtree(empty / "cells")
    html = build_report(empty, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "No cell of this run has finished yet" in html and "0 of 4 finished" in html
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"not a salt-bench run directory \(no protocol.json\)"):
        build_report(tmp_path)


def _cli() -> list[str]:
    return [str(Path(sys.executable).with_name("salt-bench")), "report"]


@pytest.mark.slow
def test_cli_report_out_and_default_path(run_dir: Path, report: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli" / "r.html"
    done = subprocess.run([*_cli(), str(run_dir), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {out}" and out.is_file()
    assert out.read_bytes() == report.read_bytes(), "the same run rendered in another process gave another report"
    done = subprocess.run([*_cli(), str(run_dir)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {run_dir / 'report.html'}" and (run_dir / "report.html").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["cli"], "the default report was written outside the run directory"


@pytest.mark.slow
def test_cli_error_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([*_cli(), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"salt-bench: error: {tmp_path}: not a salt-bench run directory (no protocol.json)"]


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless system Chromium via Selenium, logging console messages and network events; None when
    the Debian packages are absent (tests that need it skip, the others still check the HTML)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        yield None
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.browser
@pytest.mark.slow
def test_report_in_headless_chromium(report: Path, browser) -> None:
    if browser is None:
        pytest.skip(f"headless browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium chromium-driver)")
    import json

    from selenium.webdriver.common.by import By

    for log in ("browser", "performance"):
        browser.get_log(log)  # drop what earlier pages logged
    url = report.resolve().as_uri()
    browser.set_window_size(1400, 1000)
    browser.get(url)
    for sid in SECTION_IDS:
        assert browser.find_element(By.ID, sid).is_displayed()
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
    assert len(images) >= 8
    assert all(complete and width > 0 for _, complete, width in images), [i for i in images if not i[2]]
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(r.startswith("data:") or r == url for r in resources), resources
    events = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in events  # this document's requests, not Chromium's own pages
            if m["method"] == "Network.requestWillBeSent" and m["params"].get("documentURL") == url]
    assert url in urls
    assert all(u.startswith("data:") or u == url for u in urls), [u[:80] for u in urls]

    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1400, height + 100)
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
