"""What one GPU pays per architecture and loss stage, what workers sharing it achieve, and what the config's whole
grid will cost on it, within a time plan.

It first prints a plan: the modes it will run and each one's share of ``--minutes`` (default 5). Each mode's units
(an architecture, an architecture at one worker count, a compile mode...) get what is left of its share over the
units left; a timed loop runs chunks of steps until its slice is spent or ``--steps`` are done (``gpu_common.boxed``)
and the tables report the steps it did. Setup (model construction, warm-up, profiling, compilation, worker start)
is not boxed: it comes out of the slices after it, and a compile or determinism unit (or a workers run) that finds
its mode's share spent is skipped and said to be. At the end the actual seconds per mode stand beside the plan.

Stages, per architecture and loss stage (``first`` at epoch 0, ``then`` at ``switch_epoch``), side by side in one
process on the same random data:

- images/s of the harness loop (``train_one_epoch``: ``batch_stream`` + augmentation + ``Trainer.step``),
  of ``Trainer.step`` alone on a fixed batch, and of a bare step (same model class, bf16 autocast on CUDA,
  same loss on the 101 px crop, ``AdamW(fused=True)`` on CUDA), and the time ratios harness/bare, step/bare;
  timed with CUDA events on CUDA, ``perf_counter`` on the CPU, after warm-up;
- kernel launches per harness step and the GPU-busy fraction (union of the kernel intervals per step from
  ``torch.profiler`` over the unprofiled time per step); on the CPU, leaf aten ops per step and no fraction;
- host syncs per harness step, counted by ``bench/host_sync.py`` on any device (Python-level calls) and, on
  CUDA, also by ``torch.cuda.set_sync_debug_mode("warn")`` (every synchronising CUDA call, C++ included);
- peak CUDA memory of the harness loop and of ``Trainer.step``;
- the achieved convolution+matmul TFLOP/s of the harness loop (``FlopCounterMode`` over one step).

Per architecture: the checkpoint's two costs, the snapshot ``CellState.to_checkpoint`` (the host copy the loop
waits for) and the write the background thread does (serialise, atomic write to a temporary directory), and
its size; ``validate`` time per image (``predict_outputs`` without TTA, plus its metrics) and ``finish`` time per
image (the out-of-fold prediction: flip TTA and plain).

Workers (``gpu_workers.py``): ``runtime.workers`` processes running the harness loop together on the device against
one process, without and (where a private daemon starts) with CUDA MPS. Then the grid's wall-time estimate
(``estimate``: the measured N-process rate where there is one, else the 1-process/N bound), ``runtime.compile``
modes (``compile_check``) and the determinism check (``determinism_check``).

Without CUDA (and with ``--smoke``) the grid of ``configs/benchmark.yaml`` (or ``--config``) is estimated on
the assumed GPU from FLOPs and kernel-running aten ops counted on the CPU (``gpu_estimate.py``): at the config's
geometry without ``--smoke``, on the smoke model with it. That mode skips the measurements, which mean nothing on
a CPU at that size, and is not time-boxed; it took about two minutes on two cores.

    python benchmarks/gpu_bench.py [--minutes 5] [--config configs/benchmark.yaml] [--archs unet,linknet]
                                   [--steps 1000] [--warmup 5] [--compile-modes false,default,reduce-overhead]
                                   [--compile-archs all] [--determinism-steps 200]
    python benchmarks/gpu_bench.py --smoke   # CPU, tu-test_resnet, 64 px, batch 4, 2 archs, 2 steps per loop
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from gpu_common import (
    Mode,
    boxed,
    checkpoints,
    chunk_splits,
    epochs_by_stage,
    fmt,
    grid_budget,
    grid_steps_per_epoch,
    max_chunk,
    pool,
    print_actual,
    print_plan,
    print_table,
    random_data,
    repeat,
    split_of,
    stages,
    timed,
    validations,
)
from gpu_estimate import COUNT_BATCH, count_estimate, counted
from gpu_workers import WorkersRow, measure_workers, mps_unavailable, print_workers, scaling
from torch.autograd import DeviceType

import architectures
from bench import atomic, checkpoint, config, losses, runtime
from bench.cell.data import DeviceData, batch_stream
from bench.cell.loop import KEPT_BY, CellState, train_one_epoch, validate
from bench.cell.prediction import finish
from bench.cell.trainer import Trainer
from bench.config import ArchPlan, Config, ProtocolConfig
from bench.errors import BenchError
from bench.host_sync import count_host_syncs
from bench.identity import cell_hash, cell_identity
from bench.inference import autocast, from_network, split_outputs, to_network
from bench.rundir import Cell

SMOKE_SET = ["runtime.device=cpu", "protocol.model.encoder=tu-test_resnet", "protocol.model.encoder_weights=null",
             "protocol.input.size=64", "protocol.input.mode=resize", "protocol.batch_size=4"]
PROFILED_STEPS = 5  # harness steps run under the profiler and under the sync counters (at most --steps)
CHECKPOINT_REPEATS = 3
SHARES = {"stages": 0.35, "workers": 0.35, "compile": 0.15, "determinism": 0.15}  # of --minutes, over the modes run


@dataclass
class StageRow:
    """One architecture at one loss stage."""

    arch: str
    stage: str
    epoch: int
    steps: int  # harness steps timed (the time box or --steps stopped the loop)
    harness_s: float  # seconds per step of each variant
    step_s: float
    bare_s: float
    batch: int
    launches: float  # kernel launches per harness step (CUDA) or leaf aten ops per step (CPU)
    busy: float | None  # GPU-busy fraction of the harness loop; None on the CPU
    syncs: float  # host syncs per harness step by bench/host_sync.py
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
        with autocast(device, trainer.arithmetic):
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


def _count_syncs(fn: Callable[[], Any], device: torch.device, n_steps: int) -> tuple[dict[str, float], float | None]:
    """Host syncs per step by the Python-level counter, by call name, and on CUDA by the sync debug mode's warnings."""
    cuda = device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with count_host_syncs() as counted:
                fn()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    cuda_syncs = sum("synchronizing" in str(w.message) for w in caught) / n_steps if cuda else None
    return {name: k / n_steps for name, k in Counter(counted.calls).items()}, cuda_syncs


def _per_step(result: tuple[list[int], float]) -> float:
    """Seconds per step of a ``boxed`` loop."""
    chunks, spent = result
    return spent / sum(chunks)


def bench_arch(cfg: Config, arch: str, data: DeviceData, n_val: int, steps: int, warmup: int,
               seconds: float) -> tuple[list[StageRow], ArchRow]:
    """Measure one architecture at each loss stage, then its checkpoint, validation and OOF costs.

    The first images of ``data`` train, the last ``n_val`` are the validation fold. Each stage's three timed loops
    (harness, ``Trainer.step``, bare) are boxed at an equal part of ``seconds``.
    """
    plan = cfg.plan(arch)
    p, device = plan.protocol, data.images.device
    cuda = device.type == "cuda"
    bs = p.batch_size
    cell = Cell(arch, 0, p.seeds[0])
    trainer = Trainer(plan, cell, data, steps_per_epoch=grid_steps_per_epoch(cfg, plan))
    n_probe = min(steps, PROFILED_STEPS)
    warm, probe, splits = split_of(data, warmup * bs, p), split_of(data, n_probe * bs, p), chunk_splits(data, p, steps)
    x, y = next(batch_stream(p, data, splits[1].train_idx, cell.seed, cell.fold, 0))
    box = seconds / (3 * len(stages(p)))
    rows = []
    for stage, epoch in stages(p):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        train_one_epoch(trainer, data, warm, cell, epoch)
        chunks, spent = boxed(lambda n: lambda: train_one_epoch(trainer, data, splits[n], cell, epoch), steps, box, device)
        harness = spent / sum(chunks)
        repeat(lambda: trainer.step(x, y, epoch), warmup)()
        step = _per_step(boxed(lambda n: repeat(lambda: trainer.step(x, y, epoch), n), steps, box, device))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        bare_fn = _bare_step(plan, trainer, _stage_terms(p, stage), x, y)
        repeat(bare_fn, warmup)()
        bare = _per_step(boxed(lambda n, fn=bare_fn: repeat(fn, n), steps, box, device))
        bare_calls, _ = _count_syncs(repeat(bare_fn, n_probe), device, n_probe)
        del bare_fn
        launches, busy_s = _profile(lambda: train_one_epoch(trainer, data, probe, cell, epoch), device, n_probe)
        calls, cuda_syncs = _count_syncs(lambda: train_one_epoch(trainer, data, probe, cell, epoch), device, n_probe)
        _, flops = counted(lambda e=epoch: train_one_epoch(trainer, data, splits[1], cell, e))
        rows.append(StageRow(arch, stage, epoch, sum(chunks), harness, step, bare, bs, launches,
                             None if busy_s is None else busy_s / harness, sum(calls.values()), sum(bare_calls.values()),
                             calls, cuda_syncs, peak, flops))

    evaluation = split_of(data, len(data.ids) - n_val, p)
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state = CellState(epoch=1, history=[{"epoch": 0, "val_score": 0.0, "val_score_a": 0.0, "val_score_b": 0.0}])
    if p.checkpoint == "crossfit":  # the checkpoint carries three kept weight sets too, each its own copy
        state.kept = {k: {"score": 0.0, "epoch": 0, "state": {n: t.clone() for n, t in weights.items()}}
                      for k in KEPT_BY}
    chash = cell_hash(cell_identity(plan, device))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        snap = statistics.median(timed(lambda: state.to_checkpoint(chash, trainer), device) for _ in range(CHECKPOINT_REPEATS))
        taken = state.to_checkpoint(chash, trainer)
        write = statistics.median(timed(lambda: atomic.write_bytes(path, checkpoint.to_bytes(taken)), torch.device("cpu"))
                                  for _ in range(CHECKPOINT_REPEATS))
        ckpt_mb = path.stat().st_size / 2**20
    validate(trainer, data, evaluation)
    val = timed(lambda: validate(trainer, data, evaluation), device) / n_val
    finish(trainer, data, evaluation, state)
    oof = timed(lambda: finish(trainer, data, evaluation, state), device) / n_val
    params = sum(t.numel() for t in trainer.model.parameters()) / 1e6
    return rows, ArchRow(arch, params, snap, write, ckpt_mb, val, oof)


def estimate(cfg: Config, rows: list[StageRow], arch_rows: list[ArchRow], workers: int,
             measured: dict[str, float]) -> list[dict[str, Any]]:
    """Per architecture: cells x (train + validate + checkpoint snapshots, then OOF), from the measured costs, and
    the wall time of its cells on ``workers`` workers.

    Assumes: one fold's training images are the pool less one fold (``pool``), batches as in ``batch_stream``
    (the ragged tail dropped), every epoch at the measured harness speed of its loss stage (warm-up, compilation,
    data loading and model construction not counted), validation and OOF at the measured seconds per image, and
    per checkpoint the measured snapshot (the write runs beside the loop). The wall time divides the serial hours
    by ``workers_x``: the measured scaling (``measured``: ``workers`` processes' aggregate images/s over one
    process's, harness loop of stage first, applied to the whole cell) where there is one, basis ``measured``;
    else ``workers`` itself, basis ``bound``: cells each at the speed measured alone, a lower bound since workers
    sharing one GPU slow each other down.
    """
    out = []
    for a in arch_rows:
        plan = cfg.plan(a.arch)
        p = plan.protocol
        steps_per_epoch = grid_steps_per_epoch(cfg, plan)
        n_val = pool(cfg) // p.folds
        epochs = epochs_by_stage(p)
        train = sum(epochs[r.stage] * steps_per_epoch * r.harness_s for r in rows if r.arch == a.arch)
        val, oof = validations(plan) * n_val * a.val_s_per_img, n_val * a.oof_s_per_img
        ckpt = checkpoints(plan, train + val) * a.snapshot_s
        cells = p.folds * len(p.seeds)
        cell_s = train + val + ckpt + oof
        if workers == 1:
            workers_x, basis = 1.0, "serial"
        elif a.arch in measured:
            workers_x, basis = measured[a.arch], "measured"
        else:
            workers_x, basis = float(workers), "bound"
        arch_h = cells * cell_s / 3600
        out.append({"arch": a.arch, "cells": cells, "steps/epoch": steps_per_epoch, "epochs_first": epochs["first"],
                    "epochs_then": epochs["then"], "train_s": train, "val_s": val, "ckpt_s": ckpt, "oof_s": oof,
                    "ckpt_%": 100 * ckpt / cell_s, "cell_min": cell_s / 60, "arch_h": arch_h, "workers_x": workers_x,
                    "basis": basis, "wall_h": arch_h / workers_x})
    return out


# --- determinism: the same short cell twice, weights compared bit for bit -------------------------------------------

@dataclass
class DeterminismRow:
    arch: str
    deterministic: bool
    max_abs_diff: float  # over every weight and buffer after the two runs; 0.0: bit-identical
    steps_per_s: float  # harness steps per second of the second run (the first warms up, autotunes)
    steps: int  # harness steps of each run, all loss stages


def determinism_check(cfg: Config, arch: str, data: DeviceData, steps: int, seconds: float) -> list[DeterminismRow]:
    """Train one cell for at most ``steps`` steps of each loss stage, twice from the same seed, with
    ``runtime.deterministic`` on (its flags and kernels) and then off; compare the two runs' weights bitwise.

    The very first run is time-boxed (a quarter of ``seconds`` over the stages); the other three replay its chunks,
    so all four train the same steps in the same epochs.
    """
    p = cfg.plan(arch).protocol
    device = data.images.device
    cell = Cell(arch, 0, p.seeds[0])
    splits = chunk_splits(data, p, steps)
    box = seconds / (4 * len(stages(p)))
    chunks: dict[int, list[int]] = {}  # per stage's epoch: the chunks of the first run, replayed by the others
    out = []
    for deterministic in (True, False):
        plan = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, deterministic=deterministic)).plan(arch)
        runtime.set_determinism(deterministic)
        states, run_s = [], 0.0
        for _ in range(2):
            trainer = Trainer(plan, cell, data, steps_per_epoch=grid_steps_per_epoch(cfg, plan))
            run_s = 0.0
            for _, epoch in stages(p):
                if epoch not in chunks:
                    chunks[epoch], spent = boxed(lambda n: lambda: train_one_epoch(trainer, data, splits[n], cell, epoch),
                                                 steps, box, device)
                else:
                    spent = sum(timed(lambda n=n: train_one_epoch(trainer, data, splits[n], cell, epoch), device)
                                for n in chunks[epoch])
                run_s += spent
            states.append({k: v.detach().float().cpu() for k, v in trainer.model.state_dict().items()})
        diff = max((a - b).abs().max().item() if a.numel() else 0.0 for a, b in zip(states[0].values(), states[1].values()))
        n_steps = sum(sum(c) for c in chunks.values())
        out.append(DeterminismRow(arch, deterministic, diff, n_steps / run_s, n_steps))
    runtime.set_determinism(cfg.runtime.deterministic)
    return out


# --- torch.compile modes ---------------------------------------------------------------------------------------------

@dataclass
class CompileRow:
    arch: str
    mode: str
    first_step_s: float  # the first step: compilation (and CUDA graph capture) included
    harness_s: float  # seconds per harness step after warm-up
    steps: int  # harness steps timed


def compile_check(cfg: Config, arch: str, data: DeviceData, mode: str, steps: int, warmup: int,
                  seconds: float) -> CompileRow:
    """The harness loop of stage ``first`` with ``runtime.compile`` set to ``mode`` (``false`` is eager), boxed at
    ``seconds`` after the first step and the warm-up."""
    import torch._dynamo

    value: bool | str = False if mode == "false" else mode
    plan = cfg.plan(arch)
    plan = dataclasses.replace(plan, runtime=dataclasses.replace(plan.runtime, compile=value))
    p, device = plan.protocol, data.images.device
    cell = Cell(arch, 0, p.seeds[0])
    torch._dynamo.reset()
    trainer = Trainer(plan, cell, data, steps_per_epoch=grid_steps_per_epoch(cfg, plan))
    splits = chunk_splits(data, p, steps)
    first = timed(lambda: train_one_epoch(trainer, data, splits[1], cell, 0), device)
    train_one_epoch(trainer, data, split_of(data, warmup * p.batch_size, p), cell, 0)
    chunks, spent = boxed(lambda n: lambda: train_one_epoch(trainer, data, splits[n], cell, 0), steps, seconds, device)
    return CompileRow(arch, mode, first, spent / sum(chunks), sum(chunks))


# --- the measured tables ---------------------------------------------------------------------------------------------

def measure(cfg: Config, archs: list[str], device: torch.device, steps: int, warmup: int, n_val: int,
            mode: Mode) -> tuple[list[StageRow], list[ArchRow]]:
    """The measured tables: training step per architecture and stage, per-architecture costs."""
    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    data = random_data(max(max_chunk(steps), warmup, PROFILED_STEPS) * batch + n_val, device)
    rows, arch_rows = [], []
    t_start = time.perf_counter()
    for arch in archs:
        stage_rows, arch_row = bench_arch(cfg, arch, data, n_val, steps, warmup, mode.slice())
        rows += stage_rows
        arch_rows.append(arch_row)
        print(f"  {arch}: measured in {time.perf_counter() - t_start:.0f} s", flush=True)

    cuda = device.type == "cuda"
    print_table("Training step, per architecture and loss stage (img/s: higher is better; ratios: time per image over "
                "bare; steps: harness steps timed)", [
        {"arch": r.arch, "stage": r.stage, "epoch": r.epoch, "batch": r.batch, "steps": r.steps,
         "harness_img/s": fmt(r.batch / r.harness_s), "step_img/s": fmt(r.batch / r.step_s),
         "bare_img/s": fmt(r.batch / r.bare_s), "harness/bare": fmt(r.harness_s / r.bare_s, 3),
         "step/bare": fmt(r.step_s / r.bare_s, 3), ("launches/step" if cuda else "aten_ops/step"): fmt(r.launches),
         "gpu_busy": fmt(r.busy, 3), "syncs/step": fmt(r.syncs, 2), "bare_syncs/step": fmt(r.bare_syncs, 2),
         "cuda_syncs/step": fmt(r.cuda_syncs, 2), "peak_MiB": fmt(r.peak_mb, 0),
         "TFLOP/s": fmt(r.flops / r.harness_s / 1e12, 3)} for r in rows])
    print("TFLOP/s: the harness's achieved convolution+matmul FLOPs (what the op-count estimate's tflops assumes)")
    print("syncs/step: calls counted by bench/host_sync.py (Tensor.item on a CPU tensor included, e.g. the step counters "
          "of a non-fused AdamW, which stay on the host); cuda_syncs/step: synchronising CUDA calls "
          "(torch.cuda.set_sync_debug_mode)")
    for r in rows:
        print(f"  {r.arch} {r.stage}: " + (", ".join(f"{k} {v:.2f}" for k, v in sorted(r.sync_calls.items())) or "none"))
    print_table("Per architecture: checkpoint (snapshot to the host: the loop waits; write: the background thread), "
                "validate (no TTA) and OOF (finish: TTA + plain)", [
        {"arch": a.arch, "params_M": fmt(a.params_m, 2), "snapshot_ms": fmt(1e3 * a.snapshot_s),
         "write_ms": fmt(1e3 * a.write_s), "ckpt_MiB": fmt(a.ckpt_mb), "val_ms/img": fmt(1e3 * a.val_s_per_img, 3),
         "oof_ms/img": fmt(1e3 * a.oof_s_per_img, 3)} for a in arch_rows])
    return rows, arch_rows


def grid_table(cfg: Config, archs: list[str], rows: list[StageRow], arch_rows: list[ArchRow], workers: int,
               worker_rows: list[WorkersRow]) -> None:
    """The grid's estimate, with the measured N-process rate where the workers mode measured one."""
    grid = estimate(cfg, rows, arch_rows, workers, scaling(worker_rows, False, workers))
    serial_h, wall_h = sum(g["arch_h"] for g in grid), sum(g["wall_h"] for g in grid)
    digits = {"train_s": 0, "val_s": 0, "ckpt_s": 1, "oof_s": 1, "ckpt_%": 2, "cell_min": 1, "arch_h": 2, "workers_x": 2,
              "wall_h": 2}
    printable = [{k: fmt(v, digits.get(k, 0)) for k, v in g.items()} for g in grid]
    printable.append({k: "-" for k in printable[0]} | {"arch": "TOTAL", "cells": str(sum(g["cells"] for g in grid)),
                                                         "arch_h": fmt(serial_h, 2), "wall_h": fmt(wall_h, 2)})
    print_table(f"Grid estimate: {len(archs)} of the config's {len(cfg.architectures)} architectures x folds x seeds, "
                f"pool {pool(cfg)} images; wall_h: arch_h / workers_x (basis measured: the measured {workers}-process "
                f"scaling; bound: 1-process/{workers})", printable)
    bases = {g["basis"] for g in grid}
    if bases == {"serial"}:
        how = "runtime.workers is 1"
    elif bases == {"measured"}:
        how = f"measured: each architecture's {workers}-process aggregate rate, no MPS"
    elif bases == {"bound"}:
        how = (f"1-process/{workers} bound: each cell at the speed measured alone, a lower bound since workers sharing "
               "one GPU slow each other down")
    else:
        how = (f"measured {workers}-process rate for {', '.join(g['arch'] for g in grid if g['basis'] == 'measured')}; "
               f"1-process/{workers} bound for the others")
    print(f"\ngrid estimate: {serial_h:.2f} h serial, {wall_h:.2f} h with {workers} worker(s) ({how})")
    with_mps = scaling(worker_rows, True, workers)
    if workers > 1 and all(g["arch"] in with_mps for g in grid):
        print(f"with MPS: {sum(g['arch_h'] / with_mps[g['arch']] for g in grid):.2f} h (the measured {workers}-process "
              "rate under MPS; salt-bench run does not start MPS itself)")


def compile_table(cfg: Config, archs: list[str], modes: list[str], device: torch.device, steps: int, warmup: int,
                  skipped: str | None, mode: Mode) -> None:
    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    data = random_data(max(max_chunk(steps), warmup) * batch, device)
    rows, notes = [], []
    for arch in archs:
        eager = None
        for compile_mode in modes:
            if mode.skip_spent():
                notes.append(f"  {arch} compile {compile_mode}: skipped (the compile share was spent)")
                continue
            r = compile_check(cfg, arch, data, compile_mode, steps, warmup, mode.slice())
            eager = r.harness_s if compile_mode == "false" else eager
            rows.append({"arch": arch, "compile": compile_mode, "first_step_s": fmt(r.first_step_s, 2), "steps": r.steps,
                         "harness_img/s": fmt(batch / r.harness_s),
                         "speedup": fmt(eager / r.harness_s, 3) if eager else "n/a"})
            print(f"  {arch} compile {compile_mode}: {r.harness_s * 1e3:.1f} ms/step", flush=True)
    print_table("Compile: runtime.compile per architecture, harness loop of stage first (speedup: over false)", rows)
    for line in notes + ([skipped] if skipped else []):
        print(line)


def determinism_table(cfg: Config, archs: list[str], device: torch.device, steps: int, mode: Mode) -> None:
    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    data = random_data(max_chunk(steps) * batch, device)
    rows, skipped = [], []
    for arch in archs:
        if mode.skip_spent():
            skipped.append(arch)
            continue
        rows += determinism_check(cfg, arch, data, steps, mode.slice())
    print_table("Determinism: one cell trained twice per setting, the same steps per loss stage, weights compared "
                "bitwise", [
        {"arch": r.arch, "deterministic": str(r.deterministic).lower(),
         "result": "identical" if r.max_abs_diff == 0 else f"max_abs_diff={r.max_abs_diff:.3g}",
         "steps": r.steps, "steps/s": fmt(r.steps_per_s, 2)} for r in rows])
    for arch in dict.fromkeys(r.arch for r in rows):
        on, off = (r for r in rows if r.arch == arch)
        print(f"  {arch}: deterministic costs {100 * (off.steps_per_s / on.steps_per_s - 1):+.1f}% time per step")
    for arch in skipped:
        print(f"  {arch}: skipped (the determinism share was spent)")


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0,
                    help="the time plan: each mode's loops stop when its share of these minutes is spent (default 5)")
    ap.add_argument("--config", action="append",
                    help="config file, repeatable to layer (default: benchmark.yaml; quick.yaml with --smoke)")
    ap.add_argument("--archs", help="comma-separated architectures of the config (default: all; the first 2 with --smoke)")
    ap.add_argument("--steps", type=int, help="at most this many timed steps per loop, if its time box does not stop it "
                    "first (default 1000; 2 with --smoke)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per loop (default 5; 1 with --smoke)")
    ap.add_argument("--compile-modes", help="runtime.compile modes to measure, comma-separated (default on CUDA: "
                    "false,default,reduce-overhead; else false)")
    ap.add_argument("--compile-archs", help="architectures the compile modes are measured on (default: the first; all)")
    ap.add_argument("--determinism-steps", type=int, help="at most this many steps per loss stage of the determinism "
                    "check (default 200; 2 with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tu-test_resnet, 64 px, batch 4, tiny random data, one thread")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="config override, repeatable; e.g. --set 'protocol.budget={train_flops: 2.0e16}' sizes the "
                         "grid at equal compute (each architecture's epochs derived as a run would derive them)")
    args = ap.parse_args()
    steps = args.steps if args.steps is not None else 2 if args.smoke else 1000
    warmup = args.warmup if args.warmup is not None else 1 if args.smoke else 5
    det_steps = args.determinism_steps if args.determinism_steps is not None else 2 if args.smoke else 200
    if steps < 1 or warmup < 1 or det_steps < 1:
        ap.error("--steps, --warmup and --determinism-steps must be at least 1")
    if not args.minutes > 0:
        ap.error("--minutes must be positive")
    t_start = time.perf_counter()
    grid_paths = args.config or [config.CONFIG_DIR / "benchmark.yaml"]
    paths = args.config or [config.CONFIG_DIR / ("quick.yaml" if args.smoke else "benchmark.yaml")]
    cfg = grid_budget(config.load(paths, [*(SMOKE_SET if args.smoke else []), *args.overrides]))
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
    n_val = 16 if args.smoke else max(pool(cfg) // cfg.protocol.folds, 1)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    measured = cuda or args.smoke
    workers = runtime.workers(cfg.runtime)
    no_mps = mps_unavailable(device)
    print(f"gpu_bench: {' + '.join(map(str, paths))}{' (smoke)' if args.smoke else ''}, device {device} ({name}), "
          f"threads {torch.get_num_threads()}, compile {cfg.runtime.compile}, deterministic {cfg.runtime.deterministic}"
          + (f", warm-up {warmup} steps per loop, {n_val} validation images" if measured else ""))

    plan: dict[str, Mode] = {}
    if measured:
        n_stages = len(stages(cfg.protocol))
        plan["stages"] = Mode("stages", f"{len(archs)} archs x {n_stages} loss stages: harness loop, Trainer.step, "
                              "bare step (boxed); profile, syncs, checkpoint, validate, OOF (not boxed)", len(archs), 0.0)
        if workers > 1:
            mps = "no MPS" + ("" if no_mps else ", MPS")
            plan["workers"] = Mode("workers", f"{len(archs)} archs x {{1, {workers}}} processes x {{{mps}}}"
                                   + (f"; MPS: not available ({no_mps})" if no_mps else ""),
                                   len(archs) * 2 * (1 if no_mps else 2), 0.0)
        plan["compile"] = Mode("compile", f"{len(compile_archs)} arch(s) x compile {{{', '.join(modes)}}} (compilation "
                               "not boxed)", len(compile_archs) * len(modes), 0.0)
        plan["determinism"] = Mode("determinism", f"{len(archs)} archs x deterministic {{true, false}} x 2 runs of the "
                                   "same steps", len(archs), 0.0)
        total = sum(SHARES[m] for m in plan)
        for key, m in plan.items():
            m.seconds = 60 * args.minutes * SHARES[key] / total
    if not cuda:
        plan["op-count"] = Mode("op-count", f"the grid of {' + '.join(Path(p).name for p in grid_paths)} from CPU op and "
                                "FLOP counts (an estimate, not a measurement)", len(archs), None)
    print_plan(list(plan.values()), args.minutes, steps)
    if measured and workers == 1:
        print("  workers: not measured: runtime.workers is 1 (the grid runs one cell at a time)")

    if measured:
        with plan["stages"] as mode:
            rows, arch_rows = measure(cfg, archs, device, steps, warmup, n_val, mode)
        worker_rows: list[WorkersRow] = []
        if "workers" in plan:
            if cuda:
                torch.cuda.empty_cache()  # this process's cached blocks are the workers' memory now
            with plan["workers"] as mode:
                worker_rows = measure_workers(cfg, archs, device, workers, steps, warmup, mode)
            print_workers(worker_rows, workers)
        grid_table(cfg, archs, rows, arch_rows, workers, worker_rows)
        skipped = None if cuda or modes != ["false"] else (
            "compile default and reduce-overhead: not measured on the CPU (inductor took 4.5 min to compile the smoke "
            "model on a 2-core CPU; pass --compile-modes to insist); reduce-overhead's CUDA graphs need CUDA")
        with plan["compile"] as mode:
            compile_table(cfg, compile_archs, modes, device, steps, warmup, skipped, mode)
        with plan["determinism"] as mode:
            determinism_table(cfg, archs, device, det_steps, mode)
    if not cuda:
        grid_cfg = grid_budget(config.load(grid_paths, ["runtime.device=cpu", *args.overrides]))
        grid_name = " + ".join(Path(p).name for p in grid_paths)
        if args.smoke:
            count_cfg, count_archs = cfg, [a for a in archs if a in grid_cfg.architectures]
        else:
            count_cfg = grid_budget(config.load(paths, ["runtime.device=cpu", *args.overrides,
                                                        f"protocol.batch_size={COUNT_BATCH}"]))
            count_archs = archs
        print(f"\nno CUDA device: the grid of {grid_name} is estimated from ops and FLOPs counted on this CPU"
              + (" (smoke: on the smoke model)" if args.smoke else f" at its geometry, batch {COUNT_BATCH}"))
        with plan["op-count"]:
            count_estimate(grid_cfg, grid_name, count_cfg, count_archs, args.smoke)
    print_actual(list(plan.values()))
    print(f"gpu_bench finished in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:  # a config or budget the grid cannot take: one line, no traceback
        sys.exit(f"gpu_bench: error: {exc}")
