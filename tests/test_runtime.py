"""The runtime section: ``runtime.deterministic`` sets the CUDA reproducibility flags (an op without a deterministic
kernel raises) in this process and in spawned workers, is recorded in env.json and the cell identity, and changes
nothing on the CPU; ``runtime.compile`` takes false, true/"default" or "reduce-overhead" and refuses anything else in
one line."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from bench import config, runtime
from bench import rundir as layout
from bench.cell.data import DeviceData
from bench.cell.train import train_cell
from bench.cell.trainer import Trainer
from bench.data import folds, tgs
from bench.errors import BenchError
from bench.identity import cell_hash, cell_identity
from bench.rundir import Cell
from tests.conftest import tiny_overrides

QUICK = config.CONFIG_DIR / "quick.yaml"
#: ``runtime.determinism()`` under ``runtime.deterministic: true``
DETERMINISTIC_FLAGS = {"deterministic_algorithms": True, "warn_only": False, "fill_uninitialized_memory": False,
                       "cudnn_deterministic": True, "cudnn_benchmark": False,
                       "cublas_workspace_config": runtime.CUBLAS_WORKSPACE}


@pytest.fixture
def restore_flags(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave the process-wide flags and the environment as the test found them."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.utils.deterministic.fill_uninitialized_memory)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    torch.utils.deterministic.fill_uninitialized_memory = saved[4]


def _cfg(*overrides: str) -> config.Config:
    return config.load([QUICK], ["runtime.device=cpu", *overrides])


def test_setup_sets_the_flags_both_ways_and_env_json_records_them(restore_flags: None) -> None:
    device = runtime.setup(_cfg("runtime.deterministic=true"))
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.utils.deterministic.fill_uninitialized_memory
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == runtime.CUBLAS_WORKSPACE
    assert runtime.environment(_cfg().runtime, device)["determinism"] == DETERMINISTIC_FLAGS
    runtime.setup(_cfg("runtime.deterministic=false"))
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
    assert runtime.environment(_cfg().runtime, device)["determinism"]["deterministic_algorithms"] is False


def test_an_op_without_a_deterministic_kernel_raises_instead_of_warning(restore_flags: None) -> None:
    """No ``warn_only``: an op that slipped through ``architectures.make_deterministic`` stops the run. ``put_``
    is one that torch refuses on the CPU too."""
    runtime.set_determinism(True)
    with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
    runtime.set_determinism(False)
    torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))


@pytest.mark.parametrize("initialised,allocated,warns", [(False, 0, False), (True, 0, False), (True, 1, True)])
def test_the_cublas_workspace_warning_only_when_the_gpu_has_been_used(
        initialised: bool, allocated: int, warns: bool, restore_flags: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """torch reads CUBLAS_WORKSPACE_CONFIG at its first cuBLAS call, which needs tensors on the GPU: CUDA started
    only to pick a profile or name the device (nothing allocated) is no reason to warn."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: {"allocation.all.allocated": allocated})
    runtime.set_determinism(True)
    assert ("CUBLAS_WORKSPACE_CONFIG" in capsys.readouterr().out) == warns
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == runtime.CUBLAS_WORKSPACE


def test_env_json_names_the_cpu_model(tmp_path: Path) -> None:
    """bf16 results differ between CPU models, so a CPU run says which model it ran on."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: avx512_bf16\n")
    assert runtime.cpu_name(info) == "AMD EPYC 9B14"
    assert runtime.cpu_name(tmp_path / "missing") not in ("", None)
    assert runtime.environment(_cfg().runtime, torch.device("cpu"))["device_name"] == runtime.cpu_name()


def _flags_in_a_spawned_worker(cfg_dict: dict[str, Any], queue: Any) -> None:
    """What a local worker sees after the setup its body runs (``bench.executors._train_claimed``)."""
    runtime.setup(config.from_dict(cfg_dict))
    queue.put(runtime.determinism())


@pytest.mark.slow
def test_a_spawned_worker_gets_the_flags(restore_flags: None) -> None:
    cfg = _cfg("runtime.deterministic=true")
    runtime.setup(cfg)  # the parent, as `salt-bench run` does before it starts its workers
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_flags_in_a_spawned_worker, args=(cfg.to_dict(), queue))
    proc.start()
    flags = queue.get(timeout=900)  # a hang guard: importing torch in a fresh process takes minutes on a busy machine
    proc.join(timeout=300)
    assert proc.exitcode == 0
    assert flags == DETERMINISTIC_FLAGS


def test_deterministic_and_compile_are_in_the_cell_identity() -> None:
    device = torch.device("cpu")
    ident = cell_identity(_cfg().plan("unet"), device)
    assert ident["deterministic"] is True and ident["compile"] is None
    hashes = {cell_hash(cell_identity(_cfg(*o).plan("unet"), device)) for o in
              ([], ["runtime.deterministic=false"], ["runtime.compile=default"], ["runtime.compile=reduce-overhead"])}
    assert len(hashes) == 4
    same = [cell_hash(cell_identity(_cfg(f"runtime.compile={v}").plan("unet"), device)) for v in ("true", "default")]
    assert same[0] == same[1]  # one mode, two spellings


@pytest.mark.parametrize("value,mode", [("false", None), ("true", "default"), ("default", "default"),
                                        ("reduce-overhead", "reduce-overhead")])
def test_compile_modes(value: str, mode: str | None) -> None:
    assert _cfg(f"runtime.compile={value}").runtime.compile_mode == mode


@pytest.mark.parametrize("value", ["max-autotune", "1", "[default]"])
def test_a_bad_compile_mode_is_one_line(value: str) -> None:
    with pytest.raises(BenchError) as err:
        _cfg(f"runtime.compile={value}")
    assert "runtime.compile" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_the_flags_change_nothing_on_the_cpu(tiny_dataset: Path, tmp_path: Path, restore_flags: None) -> None:
    """The same cell with and without the deterministic flags: bit-identical weights and history on the CPU."""
    data = tgs.load(tiny_dataset)
    device_data = DeviceData.from_arrays(data.ids, data.images, data.masks, torch.device("cpu"))
    assignment = folds.make_folds(data.masks, k=2, seed=0)
    outputs = []
    for deterministic in (True, False):
        cfg = config.load([QUICK], tiny_overrides(tiny_dataset, **{"runtime.deterministic": deterministic}))
        runtime.set_determinism(deterministic)
        out = tmp_path / str(deterministic)
        train_cell(cfg.plan("unet"), Cell("unet", 0, 0), device_data, assignment, out, progress=False)
        outputs.append([(out / name).read_bytes() for name in (layout.MODEL, layout.HISTORY)])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("value,mode", [("false", None), ("default", "default"), ("reduce-overhead", "reduce-overhead")])
def test_the_trainer_compiles_its_forward_in_the_configured_mode(value: str, mode: str | None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Plumbing only (inductor takes minutes on this CPU): torch.compile gets the mode, and reduce-overhead marks
    each step as a new CUDA graph iteration."""
    compiled, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: compiled.append(mode) or model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    cfg = config.load([QUICK], ["runtime.device=cpu", "protocol.model.encoder=tu-test_resnet", "protocol.input.size=64",
                                "protocol.input.mode=resize", "protocol.batch_size=2", f"runtime.compile={value}"])
    rng = np.random.default_rng(0)
    data = DeviceData.from_arrays(["a", "b"], rng.integers(0, 256, (2, 101, 101), dtype=np.uint8),
                                  rng.random((2, 101, 101)) < 0.5, torch.device("cpu"))
    trainer = Trainer(cfg.plan("unet"), Cell("unet", 0, 0), data, steps_per_epoch=1)
    x, y = data.images.float() / 255, data.masks.float()
    for _ in range(2):
        assert torch.isfinite(trainer.step(x, y, 0))
    assert compiled == ([] if mode is None else [mode])
    assert len(marks) == (2 if mode == "reduce-overhead" else 0)


@pytest.mark.parametrize("precision,native,expected", [("auto", True, "float32"), ("float32", True, "float32"),
                                                       ("bfloat16", True, "bfloat16"), ("bfloat16", False, "float32")])
def test_precision_decides_the_arithmetic_the_identity_and_env_json(precision: str, native: bool, expected: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """bfloat16 on the CPU only where it is native; whatever runs is what the cell identity and env.json say."""
    monkeypatch.setattr(runtime, "native_bf16", lambda: native)
    cfg = _cfg(f"runtime.precision={precision}")
    device = runtime.setup(cfg)
    assert runtime.arithmetic(cfg.runtime, device) == expected
    data = DeviceData.from_arrays(["a", "b"], np.zeros((2, 101, 101), np.uint8), np.zeros((2, 101, 101), bool), device)
    assert Trainer(cfg.plan("unet"), Cell("unet", 0, 0), data, steps_per_epoch=1).arithmetic == expected
    assert cell_identity(cfg.plan("unet"), device)["dtype"] == expected
    assert runtime.environment(cfg.runtime, device)["precision"] == expected
    said = capsys.readouterr().out
    assert ("no native bf16" in said) == (precision == "bfloat16" and not native)


def test_bfloat16_autocasts_the_training_step_and_changes_the_cell_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The convolutions of a step run in bf16 under ``runtime.precision=bfloat16``, in fp32 otherwise, and the two
    are different cells (a leaderboard never mixes them silently)."""
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    rng = np.random.default_rng(0)
    data = DeviceData.from_arrays(["a", "b"], rng.integers(0, 256, (2, 101, 101), dtype=np.uint8),
                                  rng.random((2, 101, 101)) < 0.5, torch.device("cpu"))
    x, y = data.images.float() / 255, data.masks.float()
    seen, hashes = {}, set()
    for precision in ("float32", "bfloat16"):
        cfg = config.load([QUICK], ["runtime.device=cpu", "protocol.batch_size=2", f"runtime.precision={precision}"])
        device = runtime.setup(cfg)
        trainer = Trainer(cfg.plan("unet"), Cell("unet", 0, 0), data, steps_per_epoch=1)
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda _m, _i, out, p=precision: seen.update({p: out.dtype}) and None)
        assert torch.isfinite(trainer.step(x, y, 0))
        hashes.add(cell_hash(cell_identity(cfg.plan("unet"), device)))
    assert seen == {"float32": torch.float32, "bfloat16": torch.bfloat16}
    assert len(hashes) == 2


def test_a_bad_precision_is_one_line() -> None:
    with pytest.raises(BenchError) as err:
        _cfg("runtime.precision=fp16")
    assert "runtime.precision" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="the CPU's flags are read from /proc/cpuinfo")
def test_native_bf16_follows_the_cpu_flags_not_onednn_emulation() -> None:
    """bf16 counts as native only with avx512_bf16 or AMX among the CPU's flags: oneDNN also "supports" bf16 on
    plain AVX-512 by emulating it, which trains slower than float32."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert runtime.native_bf16() == bool(flags & {"avx512_bf16", "amx_tile"})
