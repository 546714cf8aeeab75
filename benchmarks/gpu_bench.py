"""What one GPU pays per architecture and loss stage, and what the config's whole grid will cost on it.

Per architecture and loss stage (``first`` at epoch 0, ``then`` at ``switch_epoch``), side by side in one
process on the same random data:

- images/s of the harness loop (``train_one_epoch``: ``batch_stream`` + augmentation + ``Trainer.step``),
  of ``Trainer.step`` alone on a fixed batch, and of a bare step (same model class, bf16 autocast on CUDA,
  same loss on the 101 px crop, ``AdamW(fused=True)`` on CUDA), and the time ratios harness/bare, step/bare;
  timed with CUDA events on CUDA, ``perf_counter`` on the CPU, after warm-up;
- kernel launches per harness step and the GPU-busy fraction (union of the kernel intervals per step from
  ``torch.profiler`` over the unprofiled time per step); on the CPU, leaf aten ops per step and no fraction;
- host syncs per harness step, counted by ``tests/host_sync.py`` on any device (Python-level calls) and, on
  CUDA, also by ``torch.cuda.set_sync_debug_mode("warn")`` (every synchronising CUDA call, C++ included);
- peak CUDA memory of the harness loop and of ``Trainer.step``;
- the achieved convolution+matmul TFLOP/s of the harness loop (``FlopCounterMode`` over one step).

Per architecture: the checkpoint's two costs, the snapshot ``CellState.to_checkpoint`` (the host copy the loop
waits for) and the write the background thread does (serialise, atomic write to a temporary directory), and
its size; ``validate`` time per image (``predict_outputs`` without TTA, plus its metrics) and ``finish`` time per
image (the out-of-fold prediction: flip TTA and plain). Then the grid's wall-time estimate (``estimate``),
``runtime.compile`` modes (``compile_check``) and the determinism check (``determinism_check``).

Without CUDA (and with ``--smoke``) the grid of ``configs/benchmark.yaml`` (or ``--config``) is estimated on
the assumed GPU from FLOPs and kernel-running aten ops counted on the CPU (``count_ops``, ``op_estimate``,
``ASSUMPTIONS``): at the config's geometry without ``--smoke``, on the smoke model with it. That mode skips
the measurements, which mean nothing on a CPU at that size; it takes about two minutes on two cores.

    python benchmarks/gpu_bench.py [--config configs/benchmark.yaml] [--archs unet,linknet] [--steps 30] [--warmup 5]
                                   [--compile-modes false,default,reduce-overhead] [--compile-archs all]
                                   [--determinism-steps 10]
    python benchmarks/gpu_bench.py --smoke   # CPU, tu-test_resnet, 64 px, batch 4, 2 archs: a minute on one thread
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.utils._python_dispatch import TorchDispatchMode

import architectures
from bench import atomic, checkpoint, config, cost, losses, runtime
from bench.config import ArchPlan, Config, ProtocolConfig
from bench.errors import BenchError
from bench.identity import cell_hash, cell_identity
from bench.inference import autocast, from_network, predict_outputs, split_outputs, to_network
from bench.rundir import Cell
from bench.train import CellState, DeviceData, Split, Trainer, batch_stream, finish, train_one_epoch, validate, validates

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SET = ["runtime.device=cpu", "protocol.model.encoder=tu-test_resnet", "protocol.model.encoder_weights=null",
             "protocol.input.size=64", "protocol.input.mode=resize", "protocol.batch_size=4"]
PROFILED_STEPS = 5  # harness steps run under the profiler and under the sync counters (at most --steps)
CHECKPOINT_REPEATS = 3


@dataclass
class StageRow:
    """One architecture at one loss stage."""

    arch: str
    stage: str
    epoch: int
    harness_s: float  # seconds per step of each variant
    step_s: float
    bare_s: float
    batch: int
    launches: float  # kernel launches per harness step (CUDA) or leaf aten ops per step (CPU)
    busy: float | None  # GPU-busy fraction of the harness loop; None on the CPU
    syncs: float  # host syncs per harness step by tests/host_sync.py
    bare_syncs: float  # the same for the bare step
    sync_calls: dict[str, float]  # the harness's counted calls per step, by name
    cuda_syncs: float | None  # synchronising CUDA calls per harness step by the sync debug mode; None on the CPU
    peak_mb: float | None
    flops: float  # convolution and matmul FLOPs of one harness step (FlopCounterMode), for the achieved TFLOP/s


@dataclass
class ArchRow:
    """Per-architecture costs outside the training step."""

    arch: str
    params_m: float
    snapshot_s: float  # the loop's share of a checkpoint: the copy of the state to the host
    write_s: float  # the background thread's: serialise, write, fsync, rename
    ckpt_mb: float
    val_s_per_img: float
    oof_s_per_img: float


def _host_sync() -> ModuleType:
    """``tests/host_sync.py`` loaded by path: ``tests`` is not a package, and sys.path stays as it is."""
    spec = importlib.util.spec_from_file_location("host_sync", ROOT / "tests" / "host_sync.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn`` takes: CUDA events on the current stream on CUDA, ``perf_counter`` elsewhere."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def _repeat(fn: Callable[[], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn()

    return run


def _split(data: DeviceData, n_train: int, p: ProtocolConfig) -> Split:
    """A real ``Split`` whose training images are the first ``n_train`` (whole batches), validation the rest."""
    folds = np.zeros(len(data.ids), dtype=np.int64)
    folds[:n_train] = 1
    return Split.of(data, folds, 0, p)


def _stages(p: ProtocolConfig) -> list[tuple[str, int]]:
    loss = p.loss
    if loss.then is None or loss.switch_epoch is None:
        return [("first", 0)]
    return [("first", 0), ("then", loss.switch_epoch)]


def _stage_terms(p: ProtocolConfig, stage: str) -> dict[str, float]:
    return p.loss.then if stage == "then" else p.loss.first


def _bare_step(plan: ArchPlan, trainer: Trainer, terms: dict[str, float], x: torch.Tensor,
               y: torch.Tensor) -> Callable[[], None]:
    """The step with no harness around it: input prepared once, autocast forward, loss on the crop, fused AdamW."""
    p, device, cuda = plan.protocol, trainer.device, trainer.device.type == "cuda"
    model = architectures.create(plan.arch, in_channels=1, classes=1, **plan.model)
    model = runtime.prepare_model(model, device, plan.runtime.deterministic).train()  # the harness's layout and kernels
    xin = to_network((x - trainer.data.mean) / trainer.data.std, p.input).contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=p.optimizer.lr, weight_decay=p.optimizer.weight_decay, fused=cuda)
    loss_fn = losses.WeightedLoss(terms).to(device)

    has_salt = y.flatten(1).amax(dim=1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            logits, head = split_outputs(model(xin))
        loss = loss_fn(from_network(logits.float(), p.input, trainer.size, deterministic=trainer.deterministic_kernels), y)
        if p.empty_head is not None:  # the same extra term as the harness's, so both steps do the same work
            loss = loss + p.empty_head.weight * torch.nn.functional.binary_cross_entropy_with_logits(head.float(), has_salt)
        loss.backward()
        opt.step()

    return step


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length (us in, s out) of the union of [start, end) intervals: overlapping kernels count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 1e6


def _profile(fn: Callable[[], Any], device: torch.device, n_steps: int) -> tuple[float, float | None]:
    """(kernel launches per step, GPU-busy seconds per step) on CUDA; (leaf aten ops per step, None) on the CPU."""
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.events()
    if cuda:
        on_device = [e for e in events if e.device_type == DeviceType.CUDA]
        kernels = [e for e in on_device if not e.name.startswith(("Memcpy", "Memset"))]
        busy = _union_seconds([(e.time_range.start, e.time_range.end) for e in on_device])
        return len(kernels) / n_steps, busy / n_steps
    leaves = [e for e in events if e.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in e.cpu_children)]
    return len(leaves) / n_steps, None


def _count_syncs(fn: Callable[[], Any], device: torch.device, n_steps: int,
                 host_sync: ModuleType) -> tuple[dict[str, float], float | None]:
    """Host syncs per step by the Python-level counter, by call name, and on CUDA by the sync debug mode's warnings."""
    cuda = device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with host_sync.count_host_syncs() as counted:
                fn()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    cuda_syncs = sum("synchronizing" in str(w.message) for w in caught) / n_steps if cuda else None
    return {name: k / n_steps for name, k in Counter(counted.calls).items()}, cuda_syncs


def bench_arch(cfg: Config, arch: str, data: DeviceData, n_val: int, steps: int, warmup: int,
               host_sync: ModuleType) -> tuple[list[StageRow], ArchRow]:
    """Measure one architecture at each loss stage, then its checkpoint, validation and OOF costs.

    The first images of ``data`` train, the last ``n_val`` are the validation fold.
    """
    plan = cfg.plan(arch)
    p, device = plan.protocol, data.images.device
    cuda = device.type == "cuda"
    bs = p.batch_size
    cell = Cell(arch, 0, p.seeds[0])
    trainer = Trainer(plan, cell, data, steps_per_epoch=_grid_steps_per_epoch(cfg, plan))
    n_probe = min(steps, PROFILED_STEPS)
    warm, timed, probe = _split(data, warmup * bs, p), _split(data, steps * bs, p), _split(data, n_probe * bs, p)
    x, y = next(batch_stream(p, data, timed.train_idx, cell.seed, cell.fold, 0))
    rows = []
    for stage, epoch in _stages(p):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        train_one_epoch(trainer, data, warm, cell, epoch)
        harness = _timed(lambda: train_one_epoch(trainer, data, timed, cell, epoch), device) / steps
        _repeat(lambda: trainer.step(x, y, epoch), warmup)()
        step = _timed(_repeat(lambda: trainer.step(x, y, epoch), steps), device) / steps
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        bare_fn = _bare_step(plan, trainer, _stage_terms(p, stage), x, y)
        _repeat(bare_fn, warmup)()
        bare = _timed(_repeat(bare_fn, steps), device) / steps
        bare_calls, _ = _count_syncs(_repeat(bare_fn, n_probe), device, n_probe, host_sync)
        del bare_fn
        launches, busy_s = _profile(lambda: train_one_epoch(trainer, data, probe, cell, epoch), device, n_probe)
        calls, cuda_syncs = _count_syncs(lambda: train_one_epoch(trainer, data, probe, cell, epoch), device, n_probe, host_sync)
        _, flops = _counted(lambda e=epoch: train_one_epoch(trainer, data, _split(data, bs, p), cell, e))
        rows.append(StageRow(arch, stage, epoch, harness, step, bare, bs, launches,
                             None if busy_s is None else busy_s / harness, sum(calls.values()), sum(bare_calls.values()),
                             calls, cuda_syncs, peak, flops))

    evaluation = _split(data, len(data.ids) - n_val, p)
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state = CellState(epoch=1, history=[{"epoch": 0, "val_score": 0.0, "val_score_a": 0.0, "val_score_b": 0.0}])
    if p.checkpoint == "crossfit":  # the checkpoint carries three kept weight sets too, each its own copy
        state.kept = {k: {"score": 0.0, "epoch": 0, "state": {n: t.clone() for n, t in weights.items()}}
                      for k in ("all", "a", "b")}
    chash = cell_hash(cell_identity(plan, device))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        snap = statistics.median(_timed(lambda: state.to_checkpoint(chash, trainer), device) for _ in range(CHECKPOINT_REPEATS))
        taken = state.to_checkpoint(chash, trainer)
        write = statistics.median(_timed(lambda: atomic.write_bytes(path, checkpoint.to_bytes(taken)), torch.device("cpu"))
                                  for _ in range(CHECKPOINT_REPEATS))
        ckpt_mb = path.stat().st_size / 2**20
    validate(trainer, data, evaluation)
    val = _timed(lambda: validate(trainer, data, evaluation), device) / n_val
    finish(trainer, data, evaluation, state)
    oof = _timed(lambda: finish(trainer, data, evaluation, state), device) / n_val
    params = sum(t.numel() for t in trainer.model.parameters()) / 1e6
    return rows, ArchRow(arch, params, snap, write, ckpt_mb, val, oof)


def _pool(cfg: Config) -> int:
    """Labelled images the folds are cut from: ``n_train`` (a subset caps it); a data folder loses ``holdout``."""
    d = cfg.data
    n = min(d.n_train, d.subset or d.n_train)
    return n if d.source == "synthetic" else round(n * (1 - d.holdout))


def _grid_budget(cfg: Config) -> Config:
    """``cfg`` with ``protocol.budget``'s epochs derived on folds of the configured pool's size (``bench.cost``)."""
    return cost.resolve(cfg, _pool(cfg))


def _grid_steps_per_epoch(cfg: Config, plan: ArchPlan) -> int:
    return cost.steps_per_epoch(_pool(cfg) - _pool(cfg) // plan.protocol.folds, plan.protocol.batch_size)


def _epochs_by_stage(p: ProtocolConfig) -> dict[str, int]:
    switch = min(p.loss.switch_epoch, p.epochs) if p.loss.then is not None else p.epochs
    return {"first": switch, "then": p.epochs - switch}


def _validations(plan: ArchPlan) -> int:
    """Validated epochs of a cell (``runtime.validate_every`` and the last)."""
    return sum(validates(plan, e) for e in range(plan.protocol.epochs))


def _checkpoints(plan: ArchPlan, cell_s: float) -> int:
    """Resume checkpoints of a cell that takes ``cell_s``: one at most every ``checkpoint_every`` seconds,
    none after the last epoch."""
    every, epochs = plan.runtime.checkpoint_every, plan.protocol.epochs
    return epochs - 1 if every <= 0 else min(epochs - 1, int(cell_s // every))


def estimate(cfg: Config, rows: list[StageRow], arch_rows: list[ArchRow]) -> list[dict[str, Any]]:
    """Per architecture: cells x (train + validate + checkpoint snapshots, then OOF), from the measured costs.

    Assumes: one fold's training images are the pool less one fold (pool: ``_pool``), batches as in
    ``batch_stream`` (the ragged tail dropped), every epoch at the measured harness speed of its loss stage
    (warm-up, compilation, data loading and model construction not counted), validation and OOF at the
    measured seconds per image, and per checkpoint the measured snapshot (the write runs beside the loop).
    ``main`` divides the sum by the worker count: cells running that many at a time, each at the speed
    measured alone, a lower bound since workers sharing one GPU slow each other down.
    """
    out = []
    for a in arch_rows:
        plan = cfg.plan(a.arch)
        p = plan.protocol
        steps_per_epoch = _grid_steps_per_epoch(cfg, plan)
        n_val = _pool(cfg) // p.folds
        epochs = _epochs_by_stage(p)
        train = sum(epochs[r.stage] * steps_per_epoch * r.harness_s for r in rows if r.arch == a.arch)
        val, oof = _validations(plan) * n_val * a.val_s_per_img, n_val * a.oof_s_per_img
        ckpt = _checkpoints(plan, train + val) * a.snapshot_s
        cells = p.folds * len(p.seeds)
        cell_s = train + val + ckpt + oof
        out.append({"arch": a.arch, "cells": cells, "steps/epoch": steps_per_epoch, "epochs_first": epochs["first"],
                    "epochs_then": epochs["then"], "train_s": train, "val_s": val, "ckpt_s": ckpt, "oof_s": oof,
                    "ckpt_%": 100 * ckpt / cell_s, "cell_min": cell_s / 60, "arch_h": cells * cell_s / 3600})
    return out


# --- determinism: the same short cell twice, weights compared bit for bit -------------------------------------------

@dataclass
class DeterminismRow:
    arch: str
    deterministic: bool
    max_abs_diff: float  # over every weight and buffer after the two runs; 0.0: bit-identical
    steps_per_s: float  # harness steps per second of the second run (the first warms up, autotunes)


def determinism_check(cfg: Config, arch: str, data: DeviceData, steps: int) -> list[DeterminismRow]:
    """Train one cell for ``steps`` steps of each loss stage, twice from the same seed, with ``runtime.deterministic``
    on (its flags and kernels) and then off; compare the two runs' weights bitwise."""
    p = cfg.plan(arch).protocol
    cell = Cell(arch, 0, p.seeds[0])
    split = _split(data, steps * p.batch_size, p)
    out = []
    for deterministic in (True, False):
        plan = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, deterministic=deterministic)).plan(arch)
        runtime.set_determinism(deterministic)
        states, seconds = [], 0.0
        for _ in range(2):
            trainer = Trainer(plan, cell, data, steps_per_epoch=_grid_steps_per_epoch(cfg, plan))
            seconds = sum(_timed(lambda e=epoch: train_one_epoch(trainer, data, split, cell, e), data.images.device)
                          for _, epoch in _stages(p))
            states.append({k: v.detach().float().cpu() for k, v in trainer.model.state_dict().items()})
        diff = max((a - b).abs().max().item() if a.numel() else 0.0 for a, b in zip(states[0].values(), states[1].values()))
        out.append(DeterminismRow(arch, deterministic, diff, steps * len(_stages(p)) / seconds))
    runtime.set_determinism(cfg.runtime.deterministic)
    return out


# --- torch.compile modes ---------------------------------------------------------------------------------------------

@dataclass
class CompileRow:
    arch: str
    mode: str
    first_step_s: float  # the first step: compilation (and CUDA graph capture) included
    harness_s: float  # seconds per harness step after warm-up


def compile_check(cfg: Config, arch: str, data: DeviceData, mode: str, steps: int, warmup: int) -> CompileRow:
    """The harness loop of stage ``first`` with ``runtime.compile`` set to ``mode`` (``false`` is eager)."""
    import torch._dynamo

    value: bool | str = False if mode == "false" else mode
    plan = cfg.plan(arch)
    plan = dataclasses.replace(plan, runtime=dataclasses.replace(plan.runtime, compile=value))
    p, device = plan.protocol, data.images.device
    cell = Cell(arch, 0, p.seeds[0])
    torch._dynamo.reset()
    trainer = Trainer(plan, cell, data, steps_per_epoch=_grid_steps_per_epoch(cfg, plan))
    first = _timed(lambda: train_one_epoch(trainer, data, _split(data, p.batch_size, p), cell, 0), device)
    train_one_epoch(trainer, data, _split(data, warmup * p.batch_size, p), cell, 0)
    timed = _timed(lambda: train_one_epoch(trainer, data, _split(data, steps * p.batch_size, p), cell, 0), device) / steps
    return CompileRow(arch, mode, first, timed)


# --- the estimate from CPU op counts ---------------------------------------------------------------------------------

COUNT_BATCH = 2  # counted at this batch: FLOPs scale with the batch exactly, the ops per step do not change


class OpCounter(TorchDispatchMode):
    """Aten ops that run a kernel, by name, as the dispatcher sees them below autograd: views and allocations
    launch nothing and are not counted. ``phase`` (set by optimizer hooks) files ops under the optimizer."""

    FREE = (torch.ops.aten.empty, torch.ops.aten.empty_strided, torch.ops.aten.empty_like, torch.ops.aten.lift_fresh,
            torch.ops.profiler._record_function_enter_new, torch.ops.profiler._record_function_exit)

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.optimizer_ops = 0
        self.in_optimizer = False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if not func.is_view and func.overloadpacket not in self.FREE:
            self.ops[func.overloadpacket.__name__] += 1
            self.optimizer_ops += self.in_optimizer
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


@dataclass
class OpCounts:
    """One architecture's step as counted on the CPU, and what changes on CUDA."""

    arch: str
    params_m: float
    train_flops_per_img: float  # convolution and matmul FLOPs of forward + backward per image
    ops_per_step: dict[str, int]  # loss stage -> aten ops of a harness step (batch, augmentation, Trainer.step)
    optimizer_ops: int  # of which the CPU's foreach AdamW step
    fused_optimizer_ops: int  # the fused AdamW step CUDA runs instead
    convolutions: int  # forward convolutions per step: under bf16 autocast each casts its weight, and back
    infer_flops_per_img: float  # one forward in eval mode, no TTA
    predict_ops: dict[str, int]  # aten ops per ``predict_outputs`` batch: "plain", "tta"
    state_mb: float  # model + optimizer state: what a checkpoint snapshot copies to the host

    def cuda_step_ops(self, stage: str) -> int:
        """The step's ops on CUDA: fused AdamW for the CPU's foreach one, plus autocast's weight casts."""
        return self.ops_per_step[stage] - self.optimizer_ops + self.fused_optimizer_ops + 2 * self.convolutions

    def cuda_predict_ops(self, kind: str) -> int:
        return self.predict_ops[kind] + self.convolutions


def _counted(fn: Callable[[], Any], optimizer: torch.optim.Optimizer | None = None) -> tuple[OpCounter, float]:
    """(ops, conv/matmul FLOPs) of ``fn``; ops inside ``optimizer.step`` are also counted apart."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = OpCounter()
    hooks = []
    if optimizer is not None:
        hooks = [optimizer.register_step_pre_hook(lambda *a: setattr(counter, "in_optimizer", True)),
                 optimizer.register_step_post_hook(lambda *a: setattr(counter, "in_optimizer", False))]
    try:
        with FlopCounterMode(display=False) as flops, counter:
            fn()
    finally:
        for h in hooks:
            h.remove()
    return counter, float(flops.get_total_flops())


def _fused_adamw_ops(model: torch.nn.Module, p: ProtocolConfig) -> int:
    """Ops of one fused AdamW step over ``model``'s parameters (after its first, which creates the state)."""
    params = [torch.zeros_like(t, requires_grad=True) for t in model.parameters()]
    for t in params:
        t.grad = torch.zeros_like(t)
    opt = torch.optim.AdamW(params, lr=p.optimizer.lr, weight_decay=p.optimizer.weight_decay, fused=True)
    opt.step()
    counter, _ = _counted(opt.step)
    return counter.total


def count_ops(cfg: Config, arch: str, data: DeviceData) -> OpCounts:
    """Count one harness step per loss stage (after one uncounted step: AdamW creates its state on its first)
    and one ``predict_outputs`` batch with and without TTA, on the CPU at batch ``COUNT_BATCH``."""
    plan = cfg.plan(arch)
    p = plan.protocol
    cell = Cell(arch, 0, p.seeds[0])
    trainer = Trainer(plan, cell, data, steps_per_epoch=_grid_steps_per_epoch(cfg, plan))
    one = _split(data, p.batch_size, p)
    train_one_epoch(trainer, data, one, cell, 0)
    ops, optimizer_ops, convolutions = {}, 0, 0
    for stage, epoch in _stages(p):
        counter, _ = _counted(lambda e=epoch: train_one_epoch(trainer, data, one, cell, e), trainer.optimizer)
        ops[stage], optimizer_ops = counter.total, counter.optimizer_ops
        convolutions = counter.ops["convolution"]
    predict_ops = {}
    images = data.images[: p.batch_size]
    for kind in ("plain", "tta"):
        counter, _ = _counted(lambda t=kind == "tta": predict_outputs(trainer.model, images, p.input, data.mean,
                                                                       data.std, tta=t))
        predict_ops[kind] = counter.total
    state_bytes = sum(t.numel() * t.element_size() for t in _tensors(trainer.state()))
    flops = cost.count_flops(plan)  # per image, the count every cell records
    return OpCounts(arch, sum(t.numel() for t in trainer.model.parameters()) / 1e6, flops.train, ops,
                    optimizer_ops, _fused_adamw_ops(trainer.model, p), convolutions, flops.infer,
                    predict_ops, state_bytes / 2**20)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


@dataclass(frozen=True)
class Assumption:
    """A conversion factor of the op-count estimate: its fast and slow value (the low and high estimate)."""

    name: str
    fast: float
    slow: float
    unit: str
    why: str

    @property
    def mid(self) -> float:
        return math.sqrt(self.fast * self.slow)


ASSUMED_GPU = "one H100 SXM 80 GB (H200 alike), bf16 autocast, channels_last, eager PyTorch, no MPS"
ASSUMED_GPU_MEMORY = 80 * 2**30
ASSUMPTIONS = {a.name: a for a in (
    Assumption("tflops", 250.0, 60.0, "TFLOP/s",
               "achieved convolution+matmul FLOPs per second, all workers together. Fast: a quarter of the H100's "
               "989 dense bf16 peak (cuDNN reaches about half of it on large 3x3 convolutions; batch norm, activations "
               "and upsampling between them are memory-bound and not counted). Slow: what ResNet-50 reaches end to end "
               "in PyTorch AMP on an A100 (~3k img/s, ~70 TFLOP/s counted this way), i.e. no gain from the H100 on "
               "these small inputs"),
    Assumption("us_per_op", 4.0, 10.0, "us",
               "host time per counted op in a worker: dispatch, autograd bookkeeping, kernel launch (eager, one core)"),
    Assumption("d2h_gb_s", 20.0, 5.0, "GB/s", "device->host copy of a checkpoint snapshot (pageable memory)"),
    Assumption("cell_setup_s", 2.0, 8.0, "s", "per cell: model construction, Split, first-step cuDNN heuristics"),
    Assumption("worker_start_s", 10.0, 30.0, "s", "once per worker: spawn, imports, CUDA context, data.npz to the GPU"),
)}


def _value(name: str, scenario: str) -> float:
    """An assumption's value in a scenario: low takes the fast value, high the slow one, mid their geometric mean."""
    a = ASSUMPTIONS[name]
    return {"low": a.fast, "mid": a.mid, "high": a.slow}[scenario]


def op_estimate(cfg: Config, counts: list[OpCounts], workers: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Per architecture and scenario (low, mid, high): a cell's device seconds (FLOPs / ``tflops``) and host
    seconds (ops x ``us_per_op``, checkpoint snapshots, setup); per scenario the grid of ``cfg`` on one GPU.

    The grid's cells on W workers take max(device, host): device is the sum of the cells' device seconds (one
    GPU runs every kernel), host the sum of their host seconds / W (each worker has its own core); ``high``
    assumes no overlap of the two at all (device + host). Then once: the workers' start and the holdout
    prediction (the main process: per architecture and seed, every fold model on the holdout with flip TTA).
    Validation (``validate_every``) and the OOF prediction (TTA + plain) are in each cell.
    """
    rows = []
    grid = {sc: {"device_s": 0.0, "host_s": 0.0, "holdout_s": 0.0} for sc in SCENARIOS}
    d = cfg.data
    n_hold = d.n_holdout if d.source == "synthetic" else round(d.n_train * d.holdout)
    for c in counts:
        plan = cfg.plan(c.arch)
        p = plan.protocol
        steps, epochs = _grid_steps_per_epoch(cfg, plan), _epochs_by_stage(p)
        n_val, validations = _pool(cfg) // p.folds, _validations(plan)
        val_batches, cells = math.ceil(n_val / PREDICT_BATCH), p.folds * len(p.seeds)  # a cell: one fold model
        train_flops = p.epochs * steps * p.batch_size * c.train_flops_per_img
        eval_flops = (validations + 3) * n_val * c.infer_flops_per_img  # finish: TTA (two views) + plain
        host_ops = (sum(epochs[st] * steps * c.cuda_step_ops(st) for st in epochs)
                    + val_batches * ((validations + 1) * c.cuda_predict_ops("plain") + c.cuda_predict_ops("tta")))
        for sc in SCENARIOS:
            flop_rate, op_s = _value("tflops", sc) * 1e12, _value("us_per_op", sc) * 1e-6
            device = (train_flops + eval_flops) / flop_rate
            host = host_ops * op_s + _value("cell_setup_s", sc)
            # a cell shares the GPU with the other workers' cells: it lasts about max(W x device, host)
            snapshot = c.state_mb * 2**20 / (_value("d2h_gb_s", sc) * 1e9)
            ckpt = _checkpoints(plan, max(device * workers, host)) * snapshot
            host += ckpt
            grid[sc]["device_s"] += cells * device
            grid[sc]["host_s"] += cells * host / workers
            hold = (cells * 2 * n_hold * c.infer_flops_per_img / flop_rate,
                    cells * math.ceil(n_hold / PREDICT_BATCH) * c.cuda_predict_ops("tta") * op_s)
            grid[sc]["holdout_s"] += sum(hold) if sc == "high" else max(hold)
            rows.append({"arch": c.arch, "scenario": sc, "device_s": device, "host_s": host, "ckpt_s": ckpt, "cells": cells})
    for sc, g in grid.items():
        cells_s = g["device_s"] + g["host_s"] if sc == "high" else max(g["device_s"], g["host_s"])
        g["total_s"] = cells_s + _value("worker_start_s", sc) + g["holdout_s"]
    return rows, grid


SCENARIOS = ("low", "mid", "high")
PREDICT_BATCH = 64  # ``predict_outputs``'s batch


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_table(title: str, records: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(pd.DataFrame(records).to_string(index=False))


def _random_data(n: int, device: torch.device) -> DeviceData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) < rng.random((n, 1, 1))  # coverage from empty to full, uniformly
    return DeviceData.from_arrays([f"{i:05d}" for i in range(n)], images, masks, device)


def measure(cfg: Config, archs: list[str], device: torch.device, steps: int, warmup: int, n_val: int) -> None:
    """The measured tables: training step per architecture and stage, per-architecture costs, the grid."""
    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    data = _random_data(max(steps, warmup) * batch + n_val, device)
    host_sync = _host_sync()
    rows, arch_rows = [], []
    t_start = time.perf_counter()
    for arch in archs:
        stage_rows, arch_row = bench_arch(cfg, arch, data, n_val, steps, warmup, host_sync)
        rows += stage_rows
        arch_rows.append(arch_row)
        print(f"  {arch}: measured in {time.perf_counter() - t_start:.0f} s", flush=True)

    cuda = device.type == "cuda"
    _print_table("Training step, per architecture and loss stage (img/s: higher is better; ratios: time per image over bare)", [
        {"arch": r.arch, "stage": r.stage, "epoch": r.epoch, "batch": r.batch,
         "harness_img/s": _fmt(r.batch / r.harness_s), "step_img/s": _fmt(r.batch / r.step_s),
         "bare_img/s": _fmt(r.batch / r.bare_s), "harness/bare": _fmt(r.harness_s / r.bare_s, 3),
         "step/bare": _fmt(r.step_s / r.bare_s, 3), ("launches/step" if cuda else "aten_ops/step"): _fmt(r.launches),
         "gpu_busy": _fmt(r.busy, 3), "syncs/step": _fmt(r.syncs, 2), "bare_syncs/step": _fmt(r.bare_syncs, 2),
         "cuda_syncs/step": _fmt(r.cuda_syncs, 2), "peak_MiB": _fmt(r.peak_mb, 0),
         "TFLOP/s": _fmt(r.flops / r.harness_s / 1e12, 3)} for r in rows])
    print("TFLOP/s: the harness's achieved convolution+matmul FLOPs (what the op-count estimate's tflops assumes)")
    print("syncs/step: calls counted by tests/host_sync.py (Tensor.item on a CPU tensor included, e.g. the step counters "
          "of a non-fused AdamW, which stay on the host); cuda_syncs/step: synchronising CUDA calls "
          "(torch.cuda.set_sync_debug_mode)")
    for r in rows:
        print(f"  {r.arch} {r.stage}: " + (", ".join(f"{k} {v:.2f}" for k, v in sorted(r.sync_calls.items())) or "none"))
    _print_table("Per architecture: checkpoint (snapshot to the host: the loop waits; write: the background thread), "
                 "validate (no TTA) and OOF (finish: TTA + plain)", [
        {"arch": a.arch, "params_M": _fmt(a.params_m, 2), "snapshot_ms": _fmt(1e3 * a.snapshot_s),
         "write_ms": _fmt(1e3 * a.write_s), "ckpt_MiB": _fmt(a.ckpt_mb), "val_ms/img": _fmt(1e3 * a.val_s_per_img, 3),
         "oof_ms/img": _fmt(1e3 * a.oof_s_per_img, 3)} for a in arch_rows])
    workers = runtime.workers(cfg.runtime)
    grid = estimate(cfg, rows, arch_rows)
    serial_h = sum(g["arch_h"] for g in grid)
    digits = {"train_s": 0, "val_s": 0, "ckpt_s": 1, "oof_s": 1, "ckpt_%": 2, "cell_min": 1, "arch_h": 2}
    printable = [{k: _fmt(v, digits.get(k, 0)) for k, v in g.items()} for g in grid]
    printable.append({k: "-" for k in printable[0]} | {"arch": "TOTAL", "cells": str(sum(g["cells"] for g in grid)),
                                                         "arch_h": _fmt(serial_h, 2)})
    _print_table(f"Grid estimate: {len(archs)} of the config's {len(cfg.architectures)} architectures x folds x seeds, "
                 f"pool {_pool(cfg)} images", printable)
    print(f"\ngrid estimate: {serial_h:.2f} h serial, {serial_h / workers:.2f} h with {workers} worker(s) "
          "(runtime.workers; a lower bound: workers sharing one GPU slow each other down)")


def compile_table(cfg: Config, archs: list[str], modes: list[str], device: torch.device, steps: int, warmup: int,
                  skipped: str | None) -> None:
    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    data = _random_data(max(steps, warmup) * batch, device)
    rows = []
    for arch in archs:
        eager = None
        for mode in modes:
            r = compile_check(cfg, arch, data, mode, steps, warmup)
            eager = r.harness_s if mode == "false" else eager
            rows.append({"arch": arch, "compile": mode, "first_step_s": _fmt(r.first_step_s, 2),
                         "harness_img/s": _fmt(batch / r.harness_s),
                         "speedup": _fmt(eager / r.harness_s, 3) if eager else "n/a"})
            print(f"  {arch} compile {mode}: {r.harness_s * 1e3:.1f} ms/step", flush=True)
    _print_table("Compile: runtime.compile per architecture, harness loop of stage first (speedup: over false)", rows)
    if skipped:
        print(skipped)


def determinism_table(cfg: Config, archs: list[str], device: torch.device, steps: int) -> None:
    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    data = _random_data(steps * batch, device)
    rows = [r for arch in archs for r in determinism_check(cfg, arch, data, steps)]
    _print_table(f"Determinism: one cell trained twice, {steps} steps per loss stage, weights compared bitwise", [
        {"arch": r.arch, "deterministic": str(r.deterministic).lower(),
         "result": "identical" if r.max_abs_diff == 0 else f"max_abs_diff={r.max_abs_diff:.3g}",
         "steps/s": _fmt(r.steps_per_s, 2)} for r in rows])
    for arch in archs:
        on, off = (r for r in rows if r.arch == arch)
        print(f"  {arch}: deterministic costs {100 * (off.steps_per_s / on.steps_per_s - 1):+.1f}% time per step")


def count_estimate(grid_cfg: Config, grid_name: str, count_cfg: Config, archs: list[str], smoke: bool) -> None:
    """The grid of ``grid_cfg`` on one GPU, estimated from ops and FLOPs counted on this CPU under ``count_cfg``."""
    t0 = time.perf_counter()
    batch = max(count_cfg.plan(a).protocol.batch_size for a in archs)
    data = _random_data(2 * batch, torch.device("cpu"))
    counts = []
    for arch in archs:
        counts.append(count_ops(count_cfg, arch, data))
        print(f"  {arch}: counted in {time.perf_counter() - t0:.0f} s", flush=True)
    stages = [st for st, _ in _stages(count_cfg.protocol)]
    _print_table("Counted on the CPU, per architecture (GFLOP: convolutions and matmuls; ops: aten ops that run a "
                 "kernel; cuda: with fused AdamW and bf16 autocast's weight casts)", [
        {"arch": c.arch, "params_M": _fmt(c.params_m, 2), "train_GFLOP/img": _fmt(c.train_flops_per_img / 1e9, 2),
         "infer_GFLOP/img": _fmt(c.infer_flops_per_img / 1e9, 2),
         **{f"ops/step_{st}": str(c.ops_per_step[st]) for st in stages},
         **{f"cuda_ops/step_{st}": str(c.cuda_step_ops(st)) for st in stages},
         "cuda_ops/predict": str(c.cuda_predict_ops("plain")), "state_MiB": _fmt(c.state_mb)} for c in counts])
    workers = runtime.auto_workers(ASSUMED_GPU_MEMORY)
    print(f"\nAssumptions (the low estimate takes every fast value, the high every slow one, mid their geometric mean): "
          f"{ASSUMED_GPU}, {workers} workers (runtime.workers auto for >= 40 GB)")
    for a in ASSUMPTIONS.values():
        print(f"  {a.name}: {a.fast:g} (fast) .. {a.slow:g} (slow) {a.unit}: {a.why}")
    p = grid_cfg.protocol
    print(f"  counts: ops counted at batch {batch}, FLOPs scaled to each image (exact for convolutions); a convolution's "
          "backward is 2-3 kernels, most other ops one; per-epoch ops counted as if per step; not counted: data "
          "generation (cached after the first run), aggregation and the report (CPU)")
    rows, grid = op_estimate(grid_cfg, counts, workers)
    plan = grid_cfg.plan(archs[0])
    _print_table(f"Estimate per cell on the assumed GPU ({grid_name}: {p.epochs} epochs of "
                 f"{_grid_steps_per_epoch(grid_cfg, plan)} steps at batch {p.batch_size}, {_validations(plan)} "
                 f"validations of {_pool(grid_cfg) // p.folds} images; alone_s: the cell alone on the GPU)", [
        {"arch": r["arch"], "scenario": r["scenario"], "device_s": _fmt(r["device_s"], 0), "host_s": _fmt(r["host_s"], 0),
         "ckpt_s": _fmt(r["ckpt_s"], 2), "alone_s": _fmt(max(r["device_s"], r["host_s"]), 0),
         "bound": "device" if r["device_s"] >= r["host_s"] else "host"} for r in rows])
    cells = sum(r["cells"] for r in rows if r["scenario"] == "mid")
    n_seeds = len(p.seeds)
    _print_table(f"Grid on one GPU: {len(archs)} architectures x {p.folds} folds x {n_seeds} seeds = {cells} cells, "
                 f"{workers} workers", [
        {"scenario": sc, "device_min": _fmt(g["device_s"] / 60), "host_min": _fmt(g["host_s"] / 60),
         "holdout_min": _fmt(g["holdout_s"] / 60), "total_min": _fmt(g["total_s"] / 60),
         "per_seed_min": _fmt(g["total_s"] / n_seeds / 60)} for sc, g in grid.items()])
    flops_per_seed = sum(p.folds * grid_cfg.protocol.epochs * _grid_steps_per_epoch(grid_cfg, grid_cfg.plan(c.arch))
                         * grid_cfg.plan(c.arch).protocol.batch_size * c.train_flops_per_img for c in counts)
    print(f"\nthe training FLOPs of one seed ({flops_per_seed / 1e15:.1f} PFLOP) fit in 15 min at "
          f"{flops_per_seed / 900 / 1e12:.3g} TFLOP/s achieved; the TFLOP/s column of a GPU run measures it")
    label = (" [smoke: counted on the smoke model, not the benchmark's: only the arithmetic is exercised]" if smoke else "")
    print(f"\nop-count estimate (an ESTIMATE from CPU counts and the assumptions above, not a measurement): {grid_name} on "
          f"{ASSUMED_GPU.split(',')[0]}: {grid['mid']['total_s'] / 60:.1f} min (low {grid['low']['total_s'] / 60:.1f}, "
          f"high {grid['high']['total_s'] / 60:.1f}) for {cells} cells; per seed {grid['mid']['total_s'] / n_seeds / 60:.1f} "
          f"min (low {grid['low']['total_s'] / n_seeds / 60:.1f}, high {grid['high']['total_s'] / n_seeds / 60:.1f}){label}")
    print(f"  counted in {time.perf_counter() - t0:.0f} s")


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append",
                    help="config file, repeatable to layer (default: benchmark.yaml; quick.yaml with --smoke)")
    ap.add_argument("--archs", help="comma-separated architectures of the config (default: all; the first 2 with --smoke)")
    ap.add_argument("--steps", type=int, help="timed steps per variant (default 30; 2 with --smoke)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per variant (default 5; 1 with --smoke)")
    ap.add_argument("--compile-modes", help="runtime.compile modes to measure, comma-separated (default on CUDA: "
                    "false,default,reduce-overhead; else false)")
    ap.add_argument("--compile-archs", help="architectures the compile modes are measured on (default: the first; all)")
    ap.add_argument("--determinism-steps", type=int, help="steps per loss stage of the determinism check (default 10; "
                    "2 with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tu-test_resnet, 64 px, batch 4, tiny random data, one thread")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="config override, repeatable; e.g. --set 'protocol.budget={train_flops: 2.0e16}' sizes the "
                         "grid at equal compute (each architecture's epochs derived as a run would derive them)")
    args = ap.parse_args()
    steps = args.steps if args.steps is not None else 2 if args.smoke else 30
    warmup = args.warmup if args.warmup is not None else 1 if args.smoke else 5
    det_steps = args.determinism_steps if args.determinism_steps is not None else 2 if args.smoke else 10
    if steps < 1 or warmup < 1 or det_steps < 1:
        ap.error("--steps, --warmup and --determinism-steps must be at least 1")
    grid_paths = args.config or [config.CONFIG_DIR / "benchmark.yaml"]
    paths = args.config or [config.CONFIG_DIR / ("quick.yaml" if args.smoke else "benchmark.yaml")]
    cfg = _grid_budget(config.load(paths, [*(SMOKE_SET if args.smoke else []), *args.overrides]))
    # the determinism check needs cuBLAS's fixed workspace from CUDA's start, whatever runtime.deterministic says
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", runtime.CUBLAS_WORKSPACE)
    device = runtime.setup(cfg)
    cuda = device.type == "cuda"
    if not cuda:  # the smoke run is timed on one thread; counting uses every core
        torch.set_num_threads(1 if args.smoke else os.cpu_count() or 1)
    archs = _csv(args.archs) if args.archs else list(cfg.architectures)[: 2 if args.smoke else None]
    unknown = [a for a in archs if a not in cfg.architectures]
    if unknown:
        ap.error(f"--archs: {unknown[0]} is not an architecture of {' + '.join(map(str, paths))} "
                 f"(it has {', '.join(cfg.architectures)})")
    modes = _csv(args.compile_modes) if args.compile_modes else (["false", "default", "reduce-overhead"] if cuda else ["false"])
    bad = [m for m in modes if m not in ("false", *config.COMPILE_MODES)]
    if bad:
        ap.error(f"--compile-modes: {bad[0]} is not one of false, {', '.join(config.COMPILE_MODES)}")
    compile_archs = archs if args.compile_archs == "all" else _csv(args.compile_archs) if args.compile_archs else archs[:1]
    if any(a not in archs for a in compile_archs):
        ap.error(f"--compile-archs: each must be one of --archs ({', '.join(archs)}) or all")
    n_val = 16 if args.smoke else max(_pool(cfg) // cfg.protocol.folds, 1)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    measured = cuda or args.smoke
    print(f"gpu_bench: {' + '.join(map(str, paths))}{' (smoke)' if args.smoke else ''}, device {device} ({name}), "
          f"threads {torch.get_num_threads()}, compile {cfg.runtime.compile}, deterministic {cfg.runtime.deterministic}"
          + (f", {steps} timed steps after {warmup} warm-up, {n_val} validation images" if measured else ""))
    t_start = time.perf_counter()
    if measured:
        measure(cfg, archs, device, steps, warmup, n_val)
        skipped = None if cuda or modes != ["false"] else (
            "compile default and reduce-overhead: not measured on the CPU (inductor took 4.5 min to compile the smoke "
            "model on a 2-core CPU; pass --compile-modes to insist); reduce-overhead's CUDA graphs need CUDA")
        compile_table(cfg, compile_archs, modes, device, steps, warmup, skipped)
        determinism_table(cfg, archs, device, det_steps)
    if not cuda:
        grid_cfg = _grid_budget(config.load(grid_paths, ["runtime.device=cpu", *args.overrides]))
        grid_name = " + ".join(Path(p).name for p in grid_paths)
        if args.smoke:
            count_cfg, count_archs = cfg, [a for a in archs if a in grid_cfg.architectures]
        else:
            count_cfg = _grid_budget(config.load(paths, ["runtime.device=cpu", *args.overrides,
                                                         f"protocol.batch_size={COUNT_BATCH}"]))
            count_archs = archs
        print(f"\nno CUDA device: the grid of {grid_name} is estimated from ops and FLOPs counted on this CPU"
              + (" (smoke: on the smoke model)" if args.smoke else f" at its geometry, batch {COUNT_BATCH}"))
        count_estimate(grid_cfg, grid_name, count_cfg, count_archs, args.smoke)
    print(f"gpu_bench finished in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:  # a config or budget the grid cannot take: one line, no traceback
        sys.exit(f"gpu_bench: error: {exc}")
