"""Deterministic CUDA kernels, checked on the CPU: under ``runtime.deterministic`` a CUDA run's models and loss use
fixed-matrix products for bilinear interpolation and adaptive average pooling (``architectures.make_deterministic``),
which equal torch's ops to float32/bfloat16 rounding, so that no op of a harness step lacks a deterministic CUDA
kernel; on the CPU the library ops stay. Prediction prepares a loaded model as training did."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
import torch
from torch import nn

import architectures
from architectures.deterministic import (
    NONDETERMINISTIC_CUDA_OPS,
    AdaptiveAvgPool,
    BilinearResize,
    DeterministicASPPPooling,
    DeterministicPSPBlock,
    nondeterministic_ops,
)
from bench import rundir as layout
from bench import runtime
from bench.cell.prediction import load_model

ROOT = Path(__file__).resolve().parents[1]
NAMES = architectures.names()
#: the architectures whose library modules run an op without a deterministic CUDA backward (issue 27's reading)
AFFECTED = {"pspnet", "refinenet", "deeplabv3", "deeplabv3plus"}


@pytest.fixture(scope="module")
def det_ops() -> ModuleType:
    """benchmarks/deterministic_ops.py, whose trace and comparisons these tests assert on."""
    spec = importlib.util.spec_from_file_location("deterministic_ops", ROOT / "benchmarks" / "deterministic_ops.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _swapped(model: nn.Module) -> list[str]:
    """Names of the deterministic modules (BilinearResize counts only with matrices on)."""
    kinds = (AdaptiveAvgPool, DeterministicPSPBlock, DeterministicASPPPooling)
    return [n for n, m in model.named_modules()
            if isinstance(m, kinds) or (isinstance(m, BilinearResize) and m.matrices)]


def _bilinear_matrices(model: nn.Module) -> bool:
    return any(isinstance(m, BilinearResize) and m.matrices for m in model.modules())


def test_the_kernels_are_swapped_only_for_deterministic_cuda() -> None:
    assert runtime.deterministic_kernels(True, torch.device("cuda"))
    assert not runtime.deterministic_kernels(False, torch.device("cuda"))
    assert not runtime.deterministic_kernels(True, torch.device("cpu"))


def test_the_tracer_sees_backward_ops_and_the_list_names_real_aten_ops() -> None:
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert nondeterministic_ops(lambda: torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear").sum()) == []
    assert nondeterministic_ops(lambda: torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear").sum()
                                .backward()) == ["upsample_bilinear2d_backward"]
    for name in NONDETERMINISTIC_CUDA_OPS:  # a misspelt name would never match anything
        packet, _, overload = name.partition(".")
        assert hasattr(torch.ops.aten, packet), name
        assert not overload or overload in getattr(torch.ops.aten, packet).overloads(), name


@pytest.mark.parametrize("name", NAMES)
def test_make_deterministic_keeps_parameter_names_outputs_and_cost(name: str) -> None:
    torch.manual_seed(0)
    library = architectures.create(name, encoder="tu-test_resnet", in_channels=1, empty_head={}).eval()
    model = architectures.create(name, encoder="tu-test_resnet", in_channels=1, empty_head={})
    model.load_state_dict(library.state_dict())
    model = architectures.make_deterministic(model).eval()
    assert list(model.state_dict()) == list(library.state_dict())
    assert _bilinear_matrices(model) == (name in AFFECTED)
    assert [type(m) for m in architectures.make_deterministic(model).modules()] == [type(m) for m in model.modules()]
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for ours, theirs in zip(model(x), library(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())
    assert architectures.describe(model, input_size=64) == architectures.describe(library, input_size=64)


@pytest.mark.parametrize("name", ["pspnet", "deeplabv3plus"])  # between them, every replacement module
def test_torch_compile_traces_a_prepared_model_without_a_graph_break(name: str) -> None:
    """``runtime.compile`` on a deterministic CUDA run compiles these models: the matrices are built inside the graph
    (Dynamo only, the eager backend: no code generation)."""
    torch.manual_seed(0)
    model = architectures.make_deterministic(architectures.create(name, encoder="tu-test_resnet", in_channels=1)).eval()
    explained = torch._dynamo.explain(model)(torch.randn(2, 1, 64, 64))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("cfg_name", ["quick", "benchmark"])
@pytest.mark.parametrize("name", NAMES)
def test_the_replacement_ops_equal_the_library_ops(det_ops: ModuleType, cfg_name: str, name: str) -> None:
    """Every resize and pooling the prepared model runs, on the activations it sees, and the loss's resize, against
    torch's op: float32 to rounding (1e-6 of the largest output; 1e-5 of the largest gradient, a sum of up to 256
    terms summed in another order), bfloat16 to two bf16 steps (2**-6) of the largest value, forward and backward.
    A wrong coordinate convention (align_corners, bin edges) is off by percents."""
    rows = det_ops.arch_differences(det_ops.load(cfg_name), name)
    ops = {r.op.split()[0] for r in rows}
    assert ("bilinear" in ops) == (name in AFFECTED)
    assert ("loss" in ops) == (cfg_name == "quick")  # input.mode: resize
    for r in rows:
        assert r.fwd_fp32 <= 1e-6 * r.scale and r.bwd_fp32 <= 1e-5 * r.grad_scale, r
        assert r.fwd_bf16 <= 2**-6 * r.scale and r.bwd_bf16 <= 2**-6 * r.grad_scale, r


@pytest.mark.slow
def test_no_harness_step_prepared_for_deterministic_cuda_runs_an_op_without_a_deterministic_kernel(
        det_ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """One training step per loss stage and one validation of every architecture, at quick.yaml's and
    benchmark.yaml's geometry, traced on the CPU: with the library's modules the affected architectures (and, in
    resize mode, the loss's resize) run ops that torch documents as lacking a deterministic CUDA kernel; as
    ``runtime.deterministic`` prepares the trainer on CUDA, none."""
    table = det_ops.trace_table(NAMES)
    with capsys.disabled():
        print("\n" + det_ops.markdown_trace(table))
    for (cfg_name, arch), (before, after) in table.items():
        assert after == [], (cfg_name, arch, after)
        assert bool(before) == (arch in AFFECTED or cfg_name == "quick"), (cfg_name, arch, before)


def test_the_trainer_prepares_its_model_as_the_runtime_says(det_ops: ModuleType) -> None:
    cfg = det_ops.load("quick")
    data = det_ops.random_data(2)
    plain = det_ops.trainer_for(cfg, "pspnet", data, cuda_kernels=False)
    assert not plain.deterministic_kernels and _swapped(plain.model) == []
    prepared = det_ops.trainer_for(cfg, "pspnet", data, cuda_kernels=True)
    assert prepared.deterministic_kernels and _swapped(prepared.model)
    for trainer in (plain, prepared):
        conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_loaded_model_runs_as_its_cell_trained(tmp_path: Path, deterministic: bool) -> None:
    """channels_last as in training (not NCHW kernels), and the deterministic kernels of a deterministic cell where
    the runtime would give them (on the CPU never)."""
    options = {"encoder": "tu-test_resnet", "encoder_weights": None, "decoder_channels": 64,
               "decoder_atrous_rates": [2, 4, 6]}
    torch.manual_seed(0)
    model = architectures.create("deeplabv3", in_channels=1, classes=1, **options)
    layout.write_weights(tmp_path / layout.MODEL, model.state_dict())
    layout.CellRecord(
        arch="deeplabv3", fold=0, seed=0, protocol_hash="p", cell_hash="c", identity={"deterministic": deterministic},
        recipe="shared", tuned=None, status="ok", stop_reason="completed all epochs", arch_kwargs=options, arch_train={},
        encoder=options["encoder"], params=0, macs=0, output_stride=8, checkpoint="final", kept_epochs={"all": 0},
        epochs_run=1, val_score=0.0, train_images_per_s=1.0, infer_images_per_s=1.0, peak_mem_mb=None, device="cpu",
        device_name="cpu", dtype="float32", n_train=1, n_val=1, wall_s=1.0,
    ).write(tmp_path / layout.METRICS)
    loaded = load_model(tmp_path, torch.device("cpu"))
    conv = next(m for m in loaded.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert not loaded.training and _swapped(loaded) == []
    with mock.patch.object(runtime, "deterministic_kernels", lambda d, device: d):  # as on a CUDA device
        as_on_cuda = load_model(tmp_path, torch.device("cpu"))
    assert _bilinear_matrices(as_on_cuda) == deterministic
