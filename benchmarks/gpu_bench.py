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
- peak CUDA memory of the harness loop and of ``Trainer.step``.

Per architecture: the time to serialise and atomically write ``CellState.to_checkpoint`` (to a temporary
directory) and its size, ``validate`` time per image (``predict_probs`` without TTA, plus its metrics) and
``finish`` time per image (the out-of-fold prediction: flip TTA and plain). At the end the grid's wall-time
estimate: see ``estimate``.

    python benchmarks/gpu_bench.py [--config configs/benchmark.yaml] [--archs unet,linknet] [--steps 30] [--warmup 5]
    python benchmarks/gpu_bench.py --smoke   # CPU, tu-test_resnet, 64 px, batch 4, 2 archs: a minute on one thread
"""
from __future__ import annotations

import argparse
import importlib.util
import io
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

import architectures
from bench import atomic, config, losses, runtime
from bench.config import ArchPlan, Config, ProtocolConfig
from bench.identity import cell_hash, cell_identity
from bench.inference import autocast, from_network, split_outputs, to_network
from bench.rundir import Cell
from bench.train import CellState, DeviceData, Split, Trainer, batch_stream, finish, train_one_epoch, validate

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


@dataclass
class ArchRow:
    """Per-architecture costs outside the training step."""

    arch: str
    params_m: float
    ckpt_s: float
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
    model = architectures.create(plan.arch, in_channels=1, classes=1, **plan.model).to(device).train()
    xin = to_network((x - trainer.data.mean) / trainer.data.std, p.input)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        xin = xin.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=p.optimizer.lr, weight_decay=p.optimizer.weight_decay, fused=cuda)
    loss_fn = losses.WeightedLoss(terms).to(device)

    has_salt = y.flatten(1).amax(dim=1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            logits, head = split_outputs(model(xin))
        loss = loss_fn(from_network(logits.float(), p.input, trainer.size), y)
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
        rows.append(StageRow(arch, stage, epoch, harness, step, bare, bs, launches,
                             None if busy_s is None else busy_s / harness, sum(calls.values()), sum(bare_calls.values()),
                             calls, cuda_syncs, peak))

    evaluation = _split(data, len(data.ids) - n_val, p)
    weights = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
    state = CellState(epoch=1, history=[{"epoch": 0, "val_score": 0.0, "val_score_a": 0.0, "val_score_b": 0.0}])
    if p.checkpoint == "crossfit":  # the checkpoint carries three kept weight sets too, each its own copy
        state.kept = {k: {"score": 0.0, "epoch": 0, "state": {n: t.clone() for n, t in weights.items()}}
                      for k in ("all", "a", "b")}
    chash = cell_hash(cell_identity(plan, device))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"

        def write_checkpoint() -> None:
            buf = io.BytesIO()
            torch.save(state.to_checkpoint(chash, trainer), buf)
            atomic.write_bytes(path, buf.getvalue())

        ckpt = statistics.median(_timed(write_checkpoint, device) for _ in range(CHECKPOINT_REPEATS))
        ckpt_mb = path.stat().st_size / 2**20
    validate(trainer, data, evaluation)
    val = _timed(lambda: validate(trainer, data, evaluation), device) / n_val
    finish(trainer, data, evaluation, state)
    oof = _timed(lambda: finish(trainer, data, evaluation, state), device) / n_val
    params = sum(t.numel() for t in trainer.model.parameters()) / 1e6
    return rows, ArchRow(arch, params, ckpt, ckpt_mb, val, oof)


def _pool(cfg: Config) -> int:
    """Labelled images the folds are cut from: ``n_train`` (a subset caps it); a data folder loses ``holdout``."""
    d = cfg.data
    n = min(d.n_train, d.subset or d.n_train)
    return n if d.source == "synthetic" else round(n * (1 - d.holdout))


def _grid_steps_per_epoch(cfg: Config, plan: ArchPlan) -> int:
    n_fold_train = _pool(cfg) - _pool(cfg) // plan.protocol.folds
    return max(n_fold_train // min(plan.protocol.batch_size, n_fold_train), 1)


def estimate(cfg: Config, rows: list[StageRow], arch_rows: list[ArchRow]) -> list[dict[str, Any]]:
    """Per architecture: cells x (train + validate + checkpoint per epoch, then OOF), from the measured costs.

    Assumes: one fold's training images are the pool less one fold (pool: ``_pool``), batches as in
    ``batch_stream`` (the ragged tail dropped), every epoch at the measured harness speed of its loss stage
    (warm-up, compilation, data loading and model construction not counted) and validation and OOF at the
    measured seconds per image. ``main`` divides the sum by ``runtime.workers``: cells running that many at a
    time, each at the speed measured alone, a lower bound since workers sharing one GPU slow each other down.
    """
    out = []
    for a in arch_rows:
        p = cfg.plan(a.arch).protocol
        steps_per_epoch = _grid_steps_per_epoch(cfg, cfg.plan(a.arch))
        n_val = _pool(cfg) // p.folds
        switch = min(p.loss.switch_epoch, p.epochs) if p.loss.then is not None else p.epochs
        epochs = {"first": switch, "then": p.epochs - switch}
        train = sum(epochs[r.stage] * steps_per_epoch * r.harness_s for r in rows if r.arch == a.arch)
        val, ckpt, oof = p.epochs * n_val * a.val_s_per_img, p.epochs * a.ckpt_s, n_val * a.oof_s_per_img
        cells = p.folds * len(p.seeds)
        cell_s = train + val + ckpt + oof
        out.append({"arch": a.arch, "cells": cells, "steps/epoch": steps_per_epoch, "epochs_first": epochs["first"],
                    "epochs_then": epochs["then"], "train_s": train, "val_s": val, "ckpt_s": ckpt, "oof_s": oof,
                    "ckpt_%": 100 * ckpt / cell_s, "cell_min": cell_s / 60, "arch_h": cells * cell_s / 3600})
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_table(title: str, records: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(pd.DataFrame(records).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append",
                    help="config file, repeatable to layer (default: benchmark.yaml; quick.yaml with --smoke)")
    ap.add_argument("--archs", help="comma-separated architectures of the config (default: all; the first 2 with --smoke)")
    ap.add_argument("--steps", type=int, help="timed steps per variant (default 30; 2 with --smoke)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per variant (default 5; 1 with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tu-test_resnet, 64 px, batch 4, tiny random data, one thread")
    args = ap.parse_args()
    steps = args.steps if args.steps is not None else 2 if args.smoke else 30
    warmup = args.warmup if args.warmup is not None else 1 if args.smoke else 5
    if steps < 1 or warmup < 1:
        ap.error("--steps and --warmup must be at least 1")
    paths = args.config or [config.CONFIG_DIR / ("quick.yaml" if args.smoke else "benchmark.yaml")]
    cfg = config.load(paths, SMOKE_SET if args.smoke else [])
    device = runtime.setup(cfg)
    if args.smoke:
        torch.set_num_threads(1)
    archs = args.archs.split(",") if args.archs else list(cfg.architectures)[: 2 if args.smoke else None]
    unknown = [a for a in archs if a not in cfg.architectures]
    if unknown:
        ap.error(f"--archs: {unknown[0]} is not an architecture of {' + '.join(map(str, paths))} "
                 f"(it has {', '.join(cfg.architectures)})")

    batch = max(cfg.plan(a).protocol.batch_size for a in archs)
    n_val = 16 if args.smoke else max(_pool(cfg) // cfg.protocol.folds, 1)
    n = max(steps, warmup) * batch + n_val
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) < rng.random((n, 1, 1))  # coverage from empty to full, uniformly
    data = DeviceData.from_arrays([f"{i:05d}" for i in range(n)], images, masks, device)
    host_sync = _host_sync()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_bench: {' + '.join(map(str, paths))}{' (smoke)' if args.smoke else ''}, device {device} ({name}), "
          f"threads {torch.get_num_threads()}, {steps} timed steps after {warmup} warm-up, {n_val} validation images, "
          f"compile {cfg.runtime.compile}")

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
         "cuda_syncs/step": _fmt(r.cuda_syncs, 2), "peak_MiB": _fmt(r.peak_mb, 0)} for r in rows])
    print("syncs/step: calls counted by tests/host_sync.py (Tensor.item on a CPU tensor included, e.g. the step counters "
          "of a non-fused AdamW, which stay on the host); cuda_syncs/step: synchronising CUDA calls "
          "(torch.cuda.set_sync_debug_mode)")
    for r in rows:
        print(f"  {r.arch} {r.stage}: " + (", ".join(f"{k} {v:.2f}" for k, v in sorted(r.sync_calls.items())) or "none"))
    _print_table("Per architecture: checkpoint (serialise + atomic write), validate (no TTA) and OOF (finish: TTA + plain)", [
        {"arch": a.arch, "params_M": _fmt(a.params_m, 2), "ckpt_ms": _fmt(1e3 * a.ckpt_s), "ckpt_MiB": _fmt(a.ckpt_mb),
         "val_ms/img": _fmt(1e3 * a.val_s_per_img, 3), "oof_ms/img": _fmt(1e3 * a.oof_s_per_img, 3)} for a in arch_rows])
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
    print(f"gpu_bench finished in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
