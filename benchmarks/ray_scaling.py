"""Wall time of one small grid with the local executor and with the Ray executor on 1, 2, ... workers.

Each variant trains the same grid into a fresh run directory; a Ray variant starts a private local
cluster of N CPUs on 127.0.0.1 (one cell per CPU, so N cells train at once) and stops it afterwards,
so its time includes the cluster's start (measured separately as the time to an empty cluster). One
intra-op thread per cell: with N workers the machine needs N free cores to scale.

    python benchmarks/ray_scaling.py [--workers 1,2] [--archs unet,linknet] [--folds 2] [--epochs 2] [--n-train 48]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench import config, runner
from bench.data import synthetic


def _ray_start_s(num_cpus: int) -> float:
    """Seconds to start and stop an empty local cluster: the fixed cost inside every Ray row."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, as the executor does
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ray.shutdown()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to time")
    ap.add_argument("--archs", default="unet,linknet")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--encoder", default="tu-test_resnet")
    args = ap.parse_args()
    archs = args.archs.split(",")

    with tempfile.TemporaryDirectory(prefix="ray-scaling-") as tmp:
        data = synthetic.write_dataset(Path(tmp) / "data", n_train=args.n_train, n_test=8, seed=3)
        cfg = config.load([config.CONFIG_DIR / "quick.yaml"], [
            f"data.source={data}", f"protocol.folds={args.folds}", f"protocol.epochs={args.epochs}",
            "protocol.batch_size=8", f"protocol.model.encoder={args.encoder}", "protocol.loss.switch_epoch=1",
            "runtime.threads=1", "runtime.device=cpu",
        ])
        cells = len(archs) * args.folds
        rows = []
        t0 = time.perf_counter()
        runner.run_grid(cfg, Path(tmp) / "local", archs=archs, progress=False)
        rows.append(("local executor", time.perf_counter() - t0))
        for n in (int(w) for w in args.workers.split(",")):
            t0 = time.perf_counter()
            runner.run_grid(cfg, Path(tmp) / f"ray{n}", archs=archs, progress=False, executor="ray",
                       executor_options={"num_cpus": n})
            rows.append((f"ray, {n} worker{'s' * (n > 1)}", time.perf_counter() - t0))
        start = _ray_start_s(max(int(w) for w in args.workers.split(",")))

    print(f"\ngrid: {len(archs)} archs x {args.folds} folds = {cells} cells, {args.epochs} epochs, "
          f"{args.n_train} train images, encoder {args.encoder}, 1 thread per cell, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'executor':<18} {'wall s':>7} {'vs local':>9}")
    for name, wall in rows:
        print(f"{name:<18} {wall:7.1f} {rows[0][1] / wall:8.2f}x")
    print(f"(starting + stopping an empty local Ray cluster: {start:.1f} s, included in each Ray row)")


if __name__ == "__main__":
    main()
