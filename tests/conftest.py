"""Shared fixtures. Tests run on CPU with tiny images; the real TGS files come from ../shared/tgs-real/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DIR = Path(os.environ.get("SALT_BENCH_REAL_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "tgs-real"))


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
