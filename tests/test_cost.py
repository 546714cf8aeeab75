"""What a model costs and the equal-compute budget: counted FLOPs that depend on shapes only, epochs derived from
them that are part of the protocol, a schedule that keeps its shape, and a run that trains and reports at them."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import compare, config, cost, runner
from bench.atomic import read_json
from bench.errors import BenchError
from bench.report import build
from tests.conftest import tiny_overrides

QUICK = config.CONFIG_DIR / "quick.yaml"
BENCHMARK = config.CONFIG_DIR / "benchmark.yaml"
CLI = [sys.executable, "-m", "bench.cli"]
N_DEV = 480  # the quick profile's development set
DERIVE = """
import numpy as np, torch
from bench import config, cost
torch.manual_seed({seed}); torch.set_num_threads({threads})
cfg = config.load([config.CONFIG_DIR / "quick.yaml"], ["protocol.budget={{train_flops: 1.0e14}}", {extra!r}])
resolved = cost.resolve(cfg, 480)
print(sorted(resolved.protocol.budget.epochs.items()), [cost.count_flops(resolved.plan(a)) for a in sorted(cfg.architectures)])
"""


def _budget(text: str, *extra: str) -> config.Config:
    return config.load([QUICK], [f"protocol.budget={text}", *extra])


def test_flops_are_counted_by_shape_and_leave_the_random_state_alone() -> None:
    cfg = config.load([QUICK], [])
    before = torch.random.get_rng_state()
    counted = {a: cost.count_flops(cfg.plan(a)) for a in cfg.architectures}
    assert torch.equal(torch.random.get_rng_state(), before)  # a cell's draws do not depend on counting
    for arch, flops in counted.items():
        assert flops.infer > 0 and 2 * flops.infer < flops.train < 5 * flops.infer, arch  # backward ~ 2x forward
    assert counted["refinenet"].train > 3 * counted["linknet"].train  # the spread equal epochs hide
    wider = config.load([QUICK], ["protocol.input.size=96"])
    assert cost.count_flops(wider.plan("unet")).train == pytest.approx(counted["unet"].train * 96**2 / 64**2, rel=0.02)


@pytest.mark.slow
def test_derived_epochs_depend_on_the_protocol_only_not_on_threads_seed_or_arithmetic() -> None:
    """The same protocol derives the same epochs in fresh processes with other threads, random seeds and runtime
    settings (nothing measured enters), so the derivation is the same on any machine."""
    outs = set()
    for seed, threads, extra in ((0, 1, "runtime.precision=float32"), (7, 2, "runtime.precision=bfloat16"),
                                 (3, 1, "runtime.deterministic=false")):
        proc = subprocess.run([sys.executable, "-c", DERIVE.format(seed=seed, threads=threads, extra=extra)],
                              capture_output=True, text=True, check=True)
        outs.add(proc.stdout.strip().splitlines()[-1])
    assert len(outs) == 1, outs


def test_budget_is_in_the_protocol_hash_and_equal_epochs_keep_their_hash() -> None:
    plain = config.load([QUICK], [])
    assert config.protocol_hash(plain) == config.protocol_hash(config.load([QUICK], ["protocol.budget=null"]))
    assert "budget" not in config.protocol_dict(plain)["protocol"]  # older run directories continue under their hash
    a, b = _budget("{train_flops: 1.0e14}"), _budget("{train_flops: 2.0e14}")
    assert len({config.protocol_hash(plain), config.protocol_hash(a), config.protocol_hash(b),
                config.protocol_hash(_budget("{images: 9600}"))}) == 4
    resolved = cost.resolve(a, N_DEV)
    assert config.protocol_hash(resolved) == config.protocol_hash(a)  # epochs follow from what is hashed
    plans = {arch: resolved.plan(arch) for arch in resolved.architectures}
    assert len({p.protocol.epochs for p in plans.values()}) > 1
    assert plans["linknet"].protocol.epochs > plans["refinenet"].protocol.epochs  # cheaper: more epochs


def test_the_schedule_keeps_its_shape_at_derived_epochs() -> None:
    """quick.yaml: 40 epochs, warm-up 1, the loss switch at the last epoch, validation every 10th; at a budget of
    about 20 epochs of an architecture each is scaled, the switch staying at the last epoch."""
    base = config.load([QUICK], [])
    flops = cost.count_flops(base.plan("unet"))
    per_epoch = cost.images_per_epoch(N_DEV, base.protocol.folds, base.protocol.batch_size)
    cfg = cost.resolve(_budget(f"{{train_flops: {20 * flops.train * per_epoch!r}}}"), N_DEV)
    plan = cfg.plan("unet")
    assert plan.protocol.epochs == 20
    assert plan.protocol.loss.switch_epoch == 20 and plan.protocol.scheduler.warmup_epochs == 1
    assert plan.runtime.validate_every == 5
    images = cost.resolve(_budget("{images: 4800}"), N_DEV)  # 20 epochs of 240 images for every architecture
    assert {images.plan(a).protocol.epochs for a in images.architectures} == {20}


@pytest.mark.parametrize("text,match", [("{train_flops: 1.0e14, images: 100}", "exactly one"),
                                        ("{}", "exactly one"), ("{images: 0}", "above 0")])
def test_a_malformed_budget_is_refused_at_load(text: str, match: str) -> None:
    with pytest.raises(BenchError, match=match):
        _budget(text)


@pytest.mark.slow
def test_a_budget_below_one_epoch_is_one_line_naming_the_architecture(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = [f"--set={o}" for o in tiny_overrides(tiny_dataset)]
    proc = subprocess.run([*CLI, "run", "--config", str(QUICK), *args, "--set", "protocol.budget={train_flops: 1.0e9}",
                           "--archs", "unet", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "less than one epoch of unet" in err[0], proc.stderr
    assert not out.exists()


def test_recorded_epochs_that_no_longer_follow_are_refused() -> None:
    resolved = cost.resolve(_budget("{train_flops: 1.0e14}"), N_DEV)
    budget = dataclasses.replace(resolved.protocol.budget, epochs={**resolved.protocol.budget.epochs, "unet": 1})
    moved = dataclasses.replace(resolved, protocol=dataclasses.replace(resolved.protocol, budget=budget))
    with pytest.raises(BenchError, match="budget.epochs.unet"):
        cost.resolve(moved, N_DEV)


@pytest.mark.slow
def test_a_run_at_equal_compute_trains_records_and_reports_each_architectures_epochs(tiny_dataset: Path,
                                                                                    tmp_path: Path) -> None:
    base = config.load([QUICK], tiny_overrides(tiny_dataset))
    run_dir = tmp_path / "run"
    per_epoch = cost.images_per_epoch(48, base.protocol.folds, base.protocol.batch_size)  # the tiny set, no holdout
    budget = 3 * cost.count_flops(base.plan("unet")).train * per_epoch  # three epochs of UNet
    cfg = config.load([QUICK], [*tiny_overrides(tiny_dataset), f"protocol.budget={{train_flops: {budget!r}}}"])
    board = runner.run_grid(cfg, run_dir, archs=["unet", "linknet"], progress=False)
    saved = config.load([run_dir / "config.yaml"], []).protocol.budget.epochs
    assert saved["unet"] == 3 and saved["linknet"] > 3
    for arch in ("unet", "linknet"):
        metrics = read_json(run_dir / "cells" / arch / "fold0-seed0" / "metrics.json")
        assert metrics["epochs"] == metrics["epochs_run"] == saved[arch]
        assert metrics["identity"]["epochs"] == saved[arch]
        per_epoch_flops = metrics["train_flops"] / saved[arch]
        assert abs(metrics["train_flops"] - budget) <= per_epoch_flops  # the budget, to within one epoch
        assert metrics["infer_ms"] > 0 and metrics["train_s"] > 0
    row = board.set_index("arch")
    assert row.loc["unet", "epochs"] == 3 and row.loc["linknet", "epochs"] == saved["linknet"]
    assert (row["train_pflop"] > 0).all()
    page = build.render(build.load_run(run_dir))
    assert "Equal compute" in page and f"linknet {saved['linknet']}" in page
    assert "training PFLOP per model" in page
    # the same data at equal epochs: compare names the budget and each architecture's epochs, and shows the ranks
    equal = tmp_path / "equal"
    runner.run_grid(base, equal, archs=["unet", "linknet"], progress=False)
    table, _ = compare.compare(equal, run_dir)
    rows = table.set_index("arch")
    assert rows.loc["linknet", "epochs_a"] == base.protocol.epochs and rows.loc["linknet", "epochs_b"] == saved["linknet"]
    assert set(rows["rank_a"]) == set(rows["rank_b"]) == {1, 2}
    said = rows.loc["linknet", "differences"]
    assert "protocol.budget: absent ->" in said and f"architectures.linknet.epochs: 2 -> {saved['linknet']}" in said


@pytest.mark.slow
def test_equal_epochs_report_says_so(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = config.load([QUICK], [*tiny_overrides(tiny_dataset), "protocol.epochs=1"])
    runner.run_grid(cfg, tmp_path / "run", archs=["unet"], folds=[0, 1], progress=False)
    page = build.render(build.load_run(tmp_path / "run"))
    assert "Equal epochs" in page and "every architecture trained 1 epochs" in page
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert board["epochs"].iloc[0] == 1 and board["infer_ms"].iloc[0] > 0


def test_a_tuning_trial_trains_at_the_budget_under_its_own_settings() -> None:
    """A trial that widens UNet's decoder costs more per epoch, so it gets fewer epochs (``cost.rederive``); the
    other architectures keep theirs."""
    from bench.tune.space import with_arch

    resolved = cost.resolve(_budget("{train_flops: 1.0e14}"), N_DEV)
    wider = with_arch(resolved, "unet", {"decoder_channels": [256, 128, 64, 32, 16]}, "trial 0")
    trial = cost.rederive(wider, "unet", N_DEV)
    before, after = resolved.protocol.budget.epochs, trial.protocol.budget.epochs
    assert after["unet"] < before["unet"]
    assert {a: e for a, e in after.items() if a != "unet"} == {a: e for a, e in before.items() if a != "unet"}
    assert trial.plan("unet").protocol.epochs == after["unet"]
