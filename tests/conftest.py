"""Shared fixtures. Tests run on CPU with tiny images; the real TGS files come from ../shared/tgs-real/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

REAL_DIR = Path(os.environ.get("SALT_BENCH_REAL_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "tgs-real"))


#: the groups `make test` times, as markers: a test counts in the first of these it carries, an unmarked one is
#: "fast"; browser, postgres and ray tests are marked slow too, so ``-m "not slow"`` is the quick loop
GROUPS = {
    "browser": "drives headless chromium",
    "postgres": "needs a PostgreSQL server",
    "ray": "starts a Ray cluster",
    "slow": "trains models or spawns the CLI; left out of the quick loop by -m 'not slow'",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the groups, so --strict-markers refuses a misspelt one."""
    for name, meaning in GROUPS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    """One line of tests and seconds per group, so `make test` shows where the time goes and what the quick loop
    leaves out; a test's seconds are its setup, call and teardown."""
    tests: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                tests[report.nodeid] = next((g for g in GROUPS if g in report.keywords), "fast")
                seconds[report.nodeid] = seconds.get(report.nodeid, 0.0) + report.duration
    if not tests:
        return
    parts = []
    for group in ["fast", *GROUPS]:
        ids = [nodeid for nodeid, g in tests.items() if g == group]
        if ids:
            parts.append(f"{group} {len(ids)} tests {sum(seconds[i] for i in ids):.1f} s")
    terminalreporter.write_sep("-", "time per group")
    terminalreporter.write_line(" | ".join(parts))


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real TGS files beside the project; tests that need them skip with the reason when absent."""
    if not (REAL_DIR / "train.csv").is_file():
        pytest.skip(f"real TGS files not found at {REAL_DIR} (set SALT_BENCH_REAL_DIR)")
    return REAL_DIR


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    """CI has two cores; one intra-op thread keeps timings and results stable."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the Kaggle layout, written by the real generator."""
    from bench.data import synthetic

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthetic.write_dataset(root, n_train=48, n_test=8, seed=3)
    return root


def tiny_overrides(data_dir: Path, **extra: object) -> list[str]:
    """--set overrides that shrink the quick profile to seconds on one CPU thread, same code paths
    (with the benchmark's 128 px reflect pad; test_engine covers the quick profile's resize).

    They train in float32: a two-epoch trajectory in CPU bf16 depends on the CPU model's kernels (an lr=10 tuning
    trial was driven to "salt everywhere" on one 2-core machine and settled on "no salt" on another), and these
    tests assert mechanisms, not arithmetic. test_runtime and test_cpu_benchmarks run the bf16 path."""
    values = {
        "data.source": str(data_dir), "protocol.folds": 2, "protocol.epochs": 2, "protocol.batch_size": 8,
        "protocol.model.encoder": "tu-test_resnet", "protocol.input.size": 128, "protocol.input.mode": "pad",
        "protocol.loss.then": "{lovasz: 1.0}", "protocol.loss.switch_epoch": 1, "runtime.threads": 1,
        "runtime.device": "cpu", "runtime.checkpoint_every": 0, "runtime.workers": 1, "runtime.validate_every": 1,
        "runtime.precision": "float32", "data.holdout": 0,  # tests that need the holdout ask for it
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
