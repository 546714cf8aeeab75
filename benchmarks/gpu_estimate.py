"""The grid's cost on one GPU estimated without one: FLOPs and kernel-running aten ops counted on the CPU
(``count_ops``), converted with printed assumptions (``ASSUMPTIONS``) into a low, mid and high estimate
(``op_estimate``, printed by ``count_estimate``). An estimate, not a measurement: ``gpu_bench.py`` runs it when
there is no CUDA device."""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from gpu_common import (
    checkpoints,
    epochs_by_stage,
    fmt,
    grid_steps_per_epoch,
    pool,
    print_table,
    random_data,
    split_of,
    stages,
    validations,
)
from torch.utils._python_dispatch import TorchDispatchMode

from bench import cost, runtime
from bench.cell.data import DeviceData
from bench.cell.loop import train_one_epoch
from bench.cell.trainer import Trainer
from bench.config import Config, ProtocolConfig
from bench.inference import predict_outputs
from bench.rundir import Cell

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


def counted(fn: Callable[[], Any], optimizer: torch.optim.Optimizer | None = None) -> tuple[OpCounter, float]:
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
    counter, _ = counted(opt.step)
    return counter.total


def count_ops(cfg: Config, arch: str, data: DeviceData) -> OpCounts:
    """Count one harness step per loss stage (after one uncounted step: AdamW creates its state on its first)
    and one ``predict_outputs`` batch with and without TTA, on the CPU at batch ``COUNT_BATCH``."""
    plan = cfg.plan(arch)
    p = plan.protocol
    cell = Cell(arch, 0, p.seeds[0])
    trainer = Trainer(plan, cell, data, steps_per_epoch=grid_steps_per_epoch(cfg, plan))
    one = split_of(data, p.batch_size, p)
    train_one_epoch(trainer, data, one, cell, 0)
    ops, optimizer_ops, convolutions = {}, 0, 0
    for stage, epoch in stages(p):
        counter, _ = counted(lambda e=epoch: train_one_epoch(trainer, data, one, cell, e), trainer.optimizer)
        ops[stage], optimizer_ops = counter.total, counter.optimizer_ops
        convolutions = counter.ops["convolution"]
    predict_ops = {}
    images = data.images[: p.batch_size]
    for kind in ("plain", "tta"):
        counter, _ = counted(lambda t=kind == "tta": predict_outputs(trainer.model, images, p.input, data.mean,
                                                                       data.std, trainer.arithmetic, tta=t))
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
    Assumption("cell_setup_s", 2.0, 8.0, "s", "per cell: model construction, FoldSplit, first-step cuDNN heuristics"),
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
        steps, epochs = grid_steps_per_epoch(cfg, plan), epochs_by_stage(p)
        n_val, n_validations = pool(cfg) // p.folds, validations(plan)
        val_batches, cells = math.ceil(n_val / PREDICT_BATCH), p.folds * len(p.seeds)  # a cell: one fold model
        train_flops = p.epochs * steps * p.batch_size * c.train_flops_per_img
        eval_flops = (n_validations + 3) * n_val * c.infer_flops_per_img  # finish: TTA (two views) + plain
        host_ops = (sum(epochs[st] * steps * c.cuda_step_ops(st) for st in epochs)
                    + val_batches * ((n_validations + 1) * c.cuda_predict_ops("plain") + c.cuda_predict_ops("tta")))
        for sc in SCENARIOS:
            flop_rate, op_s = _value("tflops", sc) * 1e12, _value("us_per_op", sc) * 1e-6
            device = (train_flops + eval_flops) / flop_rate
            host = host_ops * op_s + _value("cell_setup_s", sc)
            # a cell shares the GPU with the other workers' cells: it lasts about max(W x device, host)
            snapshot = c.state_mb * 2**20 / (_value("d2h_gb_s", sc) * 1e9)
            ckpt = checkpoints(plan, max(device * workers, host)) * snapshot
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


def count_estimate(grid_cfg: Config, grid_name: str, count_cfg: Config, archs: list[str], smoke: bool) -> None:
    """The grid of ``grid_cfg`` on one GPU, estimated from ops and FLOPs counted on this CPU under ``count_cfg``."""
    t0 = time.perf_counter()
    batch = max(count_cfg.plan(a).protocol.batch_size for a in archs)
    data = random_data(2 * batch, torch.device("cpu"))
    counts = []
    for arch in archs:
        counts.append(count_ops(count_cfg, arch, data))
        print(f"  {arch}: counted in {time.perf_counter() - t0:.0f} s", flush=True)
    stage_names = [st for st, _ in stages(count_cfg.protocol)]
    print_table("Counted on the CPU, per architecture (GFLOP: convolutions and matmuls; ops: aten ops that run a "
                "kernel; cuda: with fused AdamW and bf16 autocast's weight casts)", [
        {"arch": c.arch, "params_M": fmt(c.params_m, 2), "train_GFLOP/img": fmt(c.train_flops_per_img / 1e9, 2),
         "infer_GFLOP/img": fmt(c.infer_flops_per_img / 1e9, 2),
         **{f"ops/step_{st}": str(c.ops_per_step[st]) for st in stage_names},
         **{f"cuda_ops/step_{st}": str(c.cuda_step_ops(st)) for st in stage_names},
         "cuda_ops/predict": str(c.cuda_predict_ops("plain")), "state_MiB": fmt(c.state_mb)} for c in counts])
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
    print_table(f"Estimate per cell on the assumed GPU ({grid_name}: {p.epochs} epochs of "
                f"{grid_steps_per_epoch(grid_cfg, plan)} steps at batch {p.batch_size}, {validations(plan)} "
                f"validations of {pool(grid_cfg) // p.folds} images; alone_s: the cell alone on the GPU)", [
        {"arch": r["arch"], "scenario": r["scenario"], "device_s": fmt(r["device_s"], 0), "host_s": fmt(r["host_s"], 0),
         "ckpt_s": fmt(r["ckpt_s"], 2), "alone_s": fmt(max(r["device_s"], r["host_s"]), 0),
         "bound": "device" if r["device_s"] >= r["host_s"] else "host"} for r in rows])
    cells = sum(r["cells"] for r in rows if r["scenario"] == "mid")
    n_seeds = len(p.seeds)
    print_table(f"Grid on one GPU: {len(archs)} architectures x {p.folds} folds x {n_seeds} seeds = {cells} cells, "
                f"{workers} workers", [
        {"scenario": sc, "device_min": fmt(g["device_s"] / 60), "host_min": fmt(g["host_s"] / 60),
         "holdout_min": fmt(g["holdout_s"] / 60), "total_min": fmt(g["total_s"] / 60),
         "per_seed_min": fmt(g["total_s"] / n_seeds / 60)} for sc, g in grid.items()])
    flops_per_seed = sum(p.folds * grid_cfg.protocol.epochs * grid_steps_per_epoch(grid_cfg, grid_cfg.plan(c.arch))
                         * grid_cfg.plan(c.arch).protocol.batch_size * c.train_flops_per_img for c in counts)
    print(f"\nthe training FLOPs of one seed ({flops_per_seed / 1e15:.1f} PFLOP) fit in 15 min at "
          f"{flops_per_seed / 900 / 1e12:.3g} TFLOP/s achieved; the TFLOP/s column of a GPU run measures it")
    label = (" [smoke: counted on the smoke model, not the benchmark's: only the arithmetic is exercised]" if smoke else "")
    print(f"\nop-count estimate (an ESTIMATE from CPU counts and the assumptions above, not a measurement): {grid_name} on "
          f"{ASSUMED_GPU.split(',')[0]}: {grid['mid']['total_s'] / 60:.1f} min (low {grid['low']['total_s'] / 60:.1f}, "
          f"high {grid['high']['total_s'] / 60:.1f}) for {cells} cells; per seed {grid['mid']['total_s'] / n_seeds / 60:.1f} "
          f"min (low {grid['low']['total_s'] / n_seeds / 60:.1f}, high {grid['high']['total_s'] / n_seeds / 60:.1f}){label}")
    print(f"  counted in {time.perf_counter() - t0:.0f} s")

