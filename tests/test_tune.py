"""`salt-bench tune` on CPU with tiny settings and the real trainer: a SQLite study that resumes, a bad
trial pruned or failed with its reason, a crashed worker's trial retried, best.yaml fed back into a run,
and search-space errors as one line naming the file and the key."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from bench import cli, config, runner, tune
from bench.atomic import read_json
from bench.cell.data import DeviceData
from bench.data import folds as bfolds
from bench.data import source
from bench.errors import BenchError
from bench.rundir import Cell
from bench.tune.space import load_space
from tests.conftest import tiny_overrides

QUICK = config.CONFIG_DIR / "quick.yaml"
CLI = [sys.executable, "-m", "bench.cli"]

# Learning rates at which the tiny set's model learns the empty-mask prior within one epoch, so lr=10
# (which drives it to mark most pixels salt) scores clearly below the median and is pruned.
TEST_SPACE = """
sampler: {seed: 0, n_startup_trials: 2}
pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 0}
shared:
  train.optimizer.lr: {type: float, low: 3.0e-2, high: 1.0e-1, log: true}
  train.optimizer.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
"""


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# The tiny UNet these tests tune: its last decoder stage is narrow enough that lr=10 wrecks it instead of
# letting it settle on the empty-mask prior like the good trials.
TINY_UNET = {"architectures.unet.decoder_channels": "[64, 32, 16, 16, 8]"}


def _tune_cli(data_dir: Path, out: Path, space: Path, *extra: str, **sets: object) -> subprocess.CompletedProcess:
    cmd = [*CLI, "tune", "--config", str(QUICK), "--space", str(space), "--out", str(out),
           *_sets(tiny_overrides(data_dir, **{**TINY_UNET, **sets})), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=600)


def _url(run_dir: Path, study: str = "tune-unet") -> str:
    return f"sqlite:///{(run_dir / 'tuning' / f'{study}.db').resolve()}"


@pytest.fixture(scope="module")
def resumed(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """4 trials, then lr=10 enqueued through plain Optuna, then the same command adds 2 more."""
    root = tmp_path_factory.mktemp("tune")
    space = root / "space.yaml"
    space.write_text(TEST_SPACE)
    run_dir = root / "run"
    first = _tune_cli(tiny_dataset, run_dir, space, "--arch", "unet", "--n-trials", "4")
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="tune-unet", storage=_url(run_dir))
    before = [t.state for t in study.trials]
    study.enqueue_trial({"train.optimizer.lr": 10.0})
    second = _tune_cli(tiny_dataset, run_dir, space, "--arch", "unet", "--n-trials", "2")
    assert second.returncode == 0, second.stderr
    return {"run_dir": run_dir, "first": first, "second": second, "before": before}


@pytest.mark.slow
def test_study_of_four_resumes_to_six(resumed: dict) -> None:
    assert len(resumed["before"]) == 4
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in resumed["before"])
    assert "0 trials so far" in resumed["first"].stdout and "4 trials so far" in resumed["second"].stdout
    assert "6 trials (2 added now)" in resumed["second"].stdout
    study = optuna.load_study(study_name="tune-unet", storage=_url(resumed["run_dir"]))
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state.is_finished() for t in study.trials)
    first_points = {t.params["train.optimizer.lr"] for t in study.trials[:4]}
    assert len(first_points) == 4, "a trial repeated an earlier point"
    lines = [ln for ln in resumed["second"].stdout.splitlines() if ln.startswith("trial ")]
    assert [int(ln.split()[1]) for ln in lines] == [4, 5]
    assert "all-empty baseline (predict no salt anywhere) on these folds: 0.4167" in resumed["second"].stdout  # 10/24


@pytest.mark.slow
def test_each_finished_trial_says_which_of_how_many_and_the_time_left(resumed: dict) -> None:
    for run, n in (("first", 4), ("second", 2)):
        lines = [ln for ln in resumed[run].stdout.splitlines() if ln.startswith("trial ")]
        marks = [re.search(r"\[trial (\d+)/(\d+); \S+ \S+ elapsed, about \S+ \S+ left\]$", ln) for ln in lines]
        assert all(marks), lines
        assert [(int(m.group(1)), int(m.group(2))) for m in marks] == [(k, n) for k in range(1, n + 1)]


def test_summary_warns_when_the_best_trial_does_not_beat_predicting_nothing() -> None:
    out = tune.Outcome("unet", "tune-unet", "postgresql://u:pw@h/db", {"complete": 2, "pruned": 1, "fail": 0, "running": 0,
                       "waiting": 0}, 3, 1, 0.40, {"train.optimizer.lr": 10.0}, Path("b.yaml"), [Cell("unet", 0, 0)], 0.4167)
    text = tune.format_outcome(out)
    assert "3 trials (3 added now): 2 complete, 1 pruned, 0 failed" in text and "pw" not in text
    assert "does not beat the all-empty baseline" in text
    out.best_value = 0.55
    assert "does not beat" not in tune.format_outcome(out)


@pytest.mark.slow
def test_bad_trial_is_pruned_or_failed_with_its_reason(resumed: dict) -> None:
    study = optuna.load_study(study_name="tune-unet", storage=_url(resumed["run_dir"]))
    bad = study.trials[4]
    assert bad.params["train.optimizer.lr"] == 10.0
    assert bad.state in (TrialState.PRUNED, TrialState.FAIL)
    reason = bad.user_attrs.get("prune_reason") if bad.state == TrialState.PRUNED else bad.user_attrs.get("fail_reason")
    assert reason, f"no reason recorded for trial 4: {bad.user_attrs}"
    assert reason in resumed["second"].stdout
    assert study.trials[5].state.is_finished() and study.trials[5].params["train.optimizer.lr"] != 10.0
    trial_dir = resumed["run_dir"] / "tuning" / "tune-unet" / "trial-4"
    assert not list(trial_dir.rglob("*.pt")), "a stopped trial left its weights behind"


@pytest.mark.slow
def test_best_yaml_round_trips_into_a_run(resumed: dict, tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = resumed["run_dir"]
    study = optuna.load_study(study_name="tune-unet", storage=_url(run_dir))
    best_yaml = run_dir / "tuning" / "tune-unet.best.yaml"
    assert str(best_yaml) in resumed["second"].stdout
    layer = yaml.safe_load(best_yaml.read_text())
    assert list(layer) == ["architectures"] and list(layer["architectures"]) == ["unet"]
    tuned = layer["architectures"]["unet"]["train"]["optimizer"]
    assert tuned["lr"] == study.best_trial.params["train.optimizer.lr"]
    cfg = config.load([QUICK, best_yaml], tiny_overrides(tiny_dataset))
    assert config.protocol_hash(cfg) == config.protocol_hash(config.load([QUICK], tiny_overrides(tiny_dataset)))
    runner.run_grid(cfg, tmp_path / "tuned", archs=["unet"], folds=[0], progress=False)
    metrics = read_json(tmp_path / "tuned" / "cells" / "unet" / "fold0-seed0" / "metrics.json")
    assert metrics["arch_train"]["optimizer"] == tuned
    # best.yaml carries the tuned study's whole architecture section, model options included
    assert metrics["arch_kwargs"]["decoder_channels"] == yaml.safe_load(TINY_UNET["architectures.unet.decoder_channels"])


@pytest.fixture(scope="module")
def tiny_setup(tiny_dataset: Path) -> dict:
    cfg = config.load([QUICK], tiny_overrides(tiny_dataset))
    raw = source.load(cfg.data)
    assignment = bfolds.make_folds(raw.masks, k=cfg.protocol.folds, seed=cfg.protocol.fold_seed)
    data = DeviceData.from_arrays(raw.ids, raw.images, raw.masks, torch.device("cpu"))
    return {"cfg": cfg, "data": data, "assignment": assignment}


def _tune(setup: dict, tmp_path: Path, space_text: str = TEST_SPACE, cfg: config.Config | None = None,
          **kwargs: object) -> tune.Outcome:
    cfg = cfg or setup["cfg"]
    space_path = tmp_path / "space.yaml"
    space_path.write_text(space_text)
    space = load_space(space_path, cfg, ["unet"])
    args = {"run_dir": tmp_path / "run", "folds": [0], "n_trials": 1, "timeout": None, **kwargs}
    return tune.tune_arch(cfg, "unet", space, data=setup["data"], assignment=setup["assignment"], **args)


@pytest.mark.slow
def test_diverged_cell_fails_the_trial_with_its_reason_and_the_study_goes_on(
    tiny_setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.cell import trainer

    # lr=10 does not overflow float32 in two tiny epochs; make it, as it does at scale, give a non-finite loss
    step = trainer.Trainer.step
    monkeypatch.setattr(trainer.Trainer, "step", lambda self, x, y, epoch: step(self, x, y, epoch) * (
        float("nan") if self.protocol.optimizer.lr >= 10 else 1.0))
    url = f"sqlite:///{tmp_path / 'div.db'}"
    optuna.create_study(study_name="div", storage=url, direction="maximize").enqueue_trial({"train.optimizer.lr": 10.0})
    out = _tune(tiny_setup, tmp_path, storage=url, study_name="div", n_trials=2)
    assert out.counts["fail"] == 1 and out.counts["complete"] == 1
    failed, ok = optuna.load_study(study_name="div", storage=url).trials
    assert failed.state == TrialState.FAIL and ok.state == TrialState.COMPLETE
    assert failed.user_attrs["fail_reason"].startswith("fold0-seed0 diverged: non-finite loss at epoch 0")
    assert out.best_number == 1


@pytest.mark.slow
def test_crashed_worker_trial_is_retried_and_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(TEST_SPACE + "heartbeat: {interval: 1, grace_period: 2, max_retry: 1}\n")
    run_dir = tmp_path / "run"
    cmd = [*CLI, "tune", "--config", str(QUICK), "--space", str(space), "--out", str(run_dir), "--arch", "unet",
           "--n-trials", "1", *_sets(tiny_overrides(tiny_dataset, **{"protocol.epochs": 4}))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "tuning" / "tune-unet" / "trial-0" / "fold0-seed0" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the trial finished before its worker could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the grace period: the dead worker's heartbeat is stale
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    dead, retry = optuna.load_study(study_name="tune-unet", storage=_url(run_dir)).trials
    assert dead.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == dead.params and retry.user_attrs["trial_dir"] == "trial-0"
    history = (ckpt.parent / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4 and not ckpt.exists()


@pytest.mark.slow
def test_all_gives_every_architecture_the_same_budget_and_seed(tiny_dataset: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(TEST_SPACE)
    overrides = tiny_overrides(tiny_dataset, **{"architectures": "{unet: {}, linknet: {}}"})
    argv = ["tune", "--config", str(QUICK), "--space", str(space), "--out", str(tmp_path / "run"), "--all",
            "--n-trials", "1", *_sets(overrides)]
    assert cli.main(argv) == 0
    trials = {a: optuna.load_study(study_name=f"tune-{a}", storage=_url(tmp_path / "run", f"tune-{a}")).trials
              for a in ("unet", "linknet")}
    assert [len(t) for t in trials.values()] == [1, 1]
    assert trials["unet"][0].params == trials["linknet"][0].params
    table = capsys.readouterr().out.splitlines()[-3:]
    assert table[0].split()[:2] == ["arch", "trials"] and [r.split()[0] for r in table[1:]] == ["unet", "linknet"]


@pytest.mark.slow
def test_journal_storage_and_a_study_of_another_protocol_is_refused(tiny_setup: dict, tmp_path: Path) -> None:
    url = f"journal://{tmp_path / 'studies.log'}"
    out = _tune(tiny_setup, tmp_path, storage=url)
    assert out.counts["complete"] + out.counts["pruned"] == 1
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "studies.log"))
    assert len(optuna.load_study(study_name="tune-unet", storage=optuna.storages.JournalStorage(backend)).trials) == 1
    other = config.load([QUICK], tiny_overrides(Path(tiny_setup["cfg"].data.source), **{"protocol.epochs": 1}))
    with pytest.raises(BenchError, match="protocol_hash"):
        _tune(tiny_setup, tmp_path, cfg=other, storage=url, run_dir=tmp_path / "other")


def test_storage_passwords_are_masked() -> None:
    """The error of an unreachable storage (tests/test_redact.py tests the masking itself)."""
    space = load_space(None, config.load([QUICK]), ["unet"])
    with pytest.raises(BenchError) as err:
        tune.open_storage("postgresql://bench:s3cret@127.0.0.1:1/optuna", space)
    assert "s3cret" not in str(err.value) and "bench:***@" in str(err.value)
    with pytest.raises(BenchError) as err:  # a journal file that cannot be made: its path is the URL's
        tune.open_storage("journal:///proc/bench:s3cret@db/studies.log", space)
    assert "s3cret" not in str(err.value) and "bench:***@" in str(err.value) and "cannot open" in str(err.value)


@pytest.mark.slow
def test_default_space_is_valid_for_every_architecture_of_both_profiles() -> None:
    for name in ("quick.yaml", "benchmark.yaml"):
        cfg = config.load([config.CONFIG_DIR / name])
        space = load_space(None, cfg, list(cfg.architectures))  # every bound and choice checked, every model option built
        assert "train.optimizer.lr" in [p.key for p in space.shared] and space.pruner["name"] == "median"
        assert {a for a, params in space.per_arch.items() if params} == {"unet", "pspnet", "refinenet", "deeplabv3",
                                                                         "deeplabv3plus"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("shared: {train.optimizer.lr: {type: float, low: 1.0e-3, high: 20}}", "shared.train.optimizer.lr"),
        ("shared: {train.optimizer.lrr: {type: float, low: 1.0e-3, high: 0.1}}", "optimizer.lrr"),
        ("shared: {train.epochs: {type: int, low: 1, high: 3}}", "shared.train.epochs"),
        ("shared: {train.optimizer.lr: {type: gauss, low: 1.0e-3, high: 0.1}}", "shared.train.optimizer.lr"),
        ("shared: {train.optimizer.lr: {type: float, low: 0, high: 0.1, log: true}}", "shared.train.optimizer.lr"),
        ("shared: {train.batch_size: {type: categorical, choices: []}}", "shared.train.batch_size.choices"),
        ("architectures: {unet: {psp_dropout: {type: float, low: 0, high: 0.5}}}", "architectures.unet.psp_dropout"),
        ("architectures: {unet: {decoder_attention_type: {type: categorical, choices: [null, scse, cbam]}}}",
         "architectures.unet.decoder_attention_type"),
        ("architectures: {unet: {train.batch_size: {type: categorical, choices: [8]}}}", "architectures.unet.train.batch_size"),
        ("architectures: {unett: {}}", "architectures.unett"),
        ("pruner: {name: median, patience: 3}", "pruner.patience"),
        ("pruner: {name: successive}", "pruner.name"),
        ("samplr: {seed: 1}", "samplr"),
    ],
)
def test_space_errors_are_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text + "\n")
    with pytest.raises(BenchError) as err:
        load_space(path, config.load([QUICK]), ["unet"])
    message = str(err.value)
    assert "\n" not in message and str(path) in message and key in message, message


def test_cli_space_error_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("shared: {train.optimizer.lr: {type: float, low: 0.1, high: 0.01}}\n")
    argv = ["tune", "--config", str(QUICK), "--arch", "unet", "--n-trials", "1", "--space", str(path),
            "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "shared.train.optimizer.lr" in err[0]
    assert not (tmp_path / "r").exists()
