"""Where does a CPU training step's time go? ``torch.profiler`` over the harness's real step, per architecture.

Each architecture's ``Trainer.step`` (configs/quick.yaml plus any ``--set``) runs on one augmented batch stream,
single-threaded like the profile's workers, after a warm-up epoch. Two tables:

* phases, ms per step: the batch (gather + augmentation), forward + loss, backward, optimiser + schedule;
* operators, share of the step's wall time by the operators' own CPU time: convolution (forward and backward),
  normalisation, activations and element-wise arithmetic, resampling (interpolation, pooling), the loss's
  operators, the optimiser's, everything else, and what no operator accounts for (Python and dispatch).

    python benchmarks/cpu_step_profile.py [--archs unet,...] [--set KEY=VALUE ...] [--steps 16]
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from cpu_step_speed import harness
from torch.profiler import ProfilerActivity, profile, record_function

import architectures
from bench import config
from bench.cell.data import batch_stream

PHASES = ("batch", "forward+loss", "backward", "optimizer")
#: operator name fragments per category, first match wins (aten names, forward and backward)
CATEGORIES = {
    "conv": ("convolution", "conv2d", "mkldnn_conv"),
    "norm": ("batch_norm", "native_batch_norm"),
    "resample": ("upsample", "interpolate", "pool", "grid_sampler", "affine_grid"),
    "optimizer": ("_foreach", "addcdiv", "lerp", "adamw"),
    "loss": ("binary_cross_entropy", "sigmoid", "lovasz", "sort", "cumsum"),
    "elementwise": ("relu", "threshold", "add", "mul", "div", "sub", "copy_", "clamp", "where", "fill", "cat",
                    "sum", "mean", "to_copy", "index", "flip", "pow", "sqrt", "exp", "neg", "rsub"),
}


def category(op: str) -> str:
    """The category of an aten operator by its name: the first whose fragments it contains, else "other"."""
    name = op.lower()
    for cat, fragments in CATEGORIES.items():
        if any(f in name for f in fragments):
            return cat
    return "other"


def profile_arch(arch: str, overrides: list[str], steps: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(ms per step by phase, share of wall time by operator category, images/s) of ``arch``'s training step."""
    cfg = config.load([config.CONFIG_DIR / "quick.yaml"], ["runtime.device=cpu", *overrides])
    plan, data, idx, trainer = harness(cfg, arch, steps)
    n = len(idx)

    def epoch(e: int, phases: dict[str, float] | None) -> None:
        stream = batch_stream(plan.protocol, data, idx, 0, 0, e)
        while True:
            t0 = time.perf_counter()
            with record_function("batch"):
                batch = next(stream, None)
            if batch is None:
                return
            t1 = time.perf_counter()
            with record_function("forward+loss"):
                loss = trainer.objective(*batch, 0)
            t2 = time.perf_counter()
            trainer.optimizer.zero_grad(set_to_none=True)
            with record_function("backward"):
                loss.backward()
            t3 = time.perf_counter()
            with record_function("optimizer"):
                trainer.optimizer.step()
                trainer.scheduler.step()
            t4 = time.perf_counter()
            if phases is not None:
                for name, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    phases[name] += dt

    epoch(0, None)
    phases: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    epoch(1, phases)
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        epoch(2, None)
    shares: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        if ev.key.startswith("aten::") or ev.key.startswith("mkldnn"):
            shares[category(ev.key)] += ev.self_cpu_time_total
    profiled_wall = sum(ev.cpu_time_total for ev in prof.key_averages() if ev.key in PHASES)
    total = max(profiled_wall, 1.0)
    out = {cat: shares[cat] / total for cat in (*CATEGORIES, "other")}
    out["python+dispatch"] = max(1.0 - sum(out.values()), 0.0)
    return {k: 1e3 * v / steps for k, v in phases.items()}, out, n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(architectures.names()))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override on configs/quick.yaml")
    ap.add_argument("--steps", type=int, default=16, help="steps per timed and per profiled epoch")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cats = (*CATEGORIES, "other", "python+dispatch")
    rows = [(a, *profile_arch(a, args.set, args.steps)) for a in args.archs.split(",")]
    print(f"CPU, 1 thread, {args.steps} steps per epoch, overrides: {args.set or 'none'}")
    print(f"{'arch':<14}{'img/s':>7}{'ms/step':>9} " + "".join(f"{p:>14}" for p in PHASES))
    for arch, phases, _, ips in rows:
        step = sum(phases.values())
        print(f"{arch:<14}{ips:>7.0f}{step:>9.1f} " + "".join(f"{phases[p]:>8.1f} {phases[p] / step:>4.0%}" for p in PHASES))
    print("\nshare of the profiled step's wall time by the operators' own CPU time")
    print(f"{'arch':<14}" + "".join(f"{c:>16}" for c in cats))
    for arch, _, shares, _ in rows:
        print(f"{arch:<14}" + "".join(f"{shares[c]:>16.0%}" for c in cats))


if __name__ == "__main__":
    main()
