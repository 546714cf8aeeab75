"""`salt-bench` command line: data | run | tune | report | predict | compare.

Every user-facing error is a one-line message and a non-zero exit; tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from bench.errors import BenchError, one_line


def _listed(items: list, value: str) -> list:
    """A subset argument's items, refusing an empty list (``--archs "$UNSET"`` must not mean every architecture)
    and an item given twice (it would be trained or averaged twice)."""
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    twice = next((v for i, v in enumerate(items) if v in items[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{twice} is listed twice in {value!r}")
    return items


def _csv(value: str) -> list[str]:
    return _listed([v.strip() for v in value.split(",") if v.strip()], value)


def _ints(value: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    return _listed(items, value)


def _cmd_data_synth(args: argparse.Namespace) -> None:
    from bench.data import synthetic, tgs

    root = synthetic.write_dataset(args.out, n_train=args.n_train, n_test=args.n_test, seed=args.seed, style=args.style)
    print(tgs.format_summary(tgs.summary(tgs.load(root))))


def _cmd_data_check(args: argparse.Namespace) -> None:
    from bench.data import tgs

    print(tgs.format_summary(tgs.summary(tgs.load(args.dir))))


def _cmd_data_folds(args: argparse.Namespace) -> None:
    from bench.data import folds, tgs

    data = tgs.load(args.dir)
    out = Path(args.out) if args.out else Path(args.dir)
    assignment = folds.load_or_make_splits(out / "splits.json", data.ids, data.masks, k=args.k, seed=args.seed)
    folds.export_imagesets(data.ids, assignment, out / "ImageSets")
    print(folds.format_folds(data.masks, assignment))
    print(f"wrote {out / 'splits.json'} and {out / 'ImageSets'}")


def _positive_float(allow_zero: bool) -> Callable[[str], float]:
    """An argparse type for amounts (resources, seconds): a finite number > 0 (or >= 0), refused at parse
    time; NaN would pass any later ``<= 0`` check (a NaN --timeout never ends)."""
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if not (0 <= x < float("inf")) or (x == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
        return x
    return parse


def _int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type for counts and seeds: an integer >= ``lo``, refused at parse time rather than by numpy."""
    def parse(value: str) -> int:
        try:
            x = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if x < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value!r}")
        return x
    return parse


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=None, metavar="YAML",
                   help="config file; repeat to layer (later files override earlier ones)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="dotted override, e.g. --set protocol.epochs=30")


def _cmd_run(args: argparse.Namespace) -> None:
    from bench import runner

    options = {}
    if args.executor == "ray":
        options = {"address": args.ray_address, "gpus_per_cell": args.gpus_per_cell, "cpus_per_cell": args.cpus_per_cell}
    runner.run_command(args.config, args.overrides, out=Path(args.out) if args.out else None, archs=args.archs,
                       folds=args.folds, executor=args.executor, executor_options=options, report=not args.no_report,
                       allow_mixed=args.allow_mixed)


def _cmd_tune(args: argparse.Namespace) -> None:
    from bench import tune

    tune.tune(args.config, args.overrides, archs=None if args.all else [args.arch], n_trials=args.n_trials,
              timeout=args.timeout, space_path=args.space, storage=args.storage, study=args.study, folds=args.folds,
              out=Path(args.out) if args.out else None)


def _cmd_report(args: argparse.Namespace) -> None:
    import webbrowser

    from bench.report import build

    path = build.build_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"report: {path}")
    if args.open:
        webbrowser.open(path.resolve().as_uri())


def _cmd_predict(args: argparse.Namespace) -> None:
    from bench import predict

    predict.predict(Path(args.run_dir), arch=args.arch, ensemble=args.ensemble, tta=args.tta,
                    out=Path(args.out) if args.out else None, evaluate_oof=args.evaluate_oof)


def _cmd_compare(args: argparse.Namespace) -> None:
    from bench import compare

    table, path = compare.compare(Path(args.run_a), Path(args.run_b), Path(args.out) if args.out else None)
    print(compare.format_table(table, Path(args.run_a), Path(args.run_b)))
    print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salt-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate, check and split datasets in the Kaggle TGS layout")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("synth", help="write the synthetic seismic salt dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=_int_at_least(1), default=4000)
    p.add_argument("--n-test", type=_int_at_least(0), default=18000)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--style", choices=["default", "hard"], default="default", help="hard: the same labels, harder images")
    p.set_defaults(func=_cmd_data_synth)
    p = dsub.add_parser("check", help="validate a TGS folder and print its statistics")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_data_check)
    p = dsub.add_parser("folds", help="make (or reload) coverage-stratified folds and ImageSets")
    p.add_argument("dir")
    p.add_argument("--k", type=_int_at_least(2), default=5)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", default=None, help="where splits.json and ImageSets/ go (default: the data folder)")
    p.set_defaults(func=_cmd_data_folds)

    p = sub.add_parser("run", help="train every architecture on every fold under one protocol")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--archs", type=_csv, default=None, help="subset of architectures, e.g. unet,refinenet")
    p.add_argument("--folds", type=_ints, default=None, help="subset of folds, e.g. 0,1")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    p.add_argument("--allow-mixed", action="store_true",
                   help="rank cells that ran on different devices, dtypes, library or code versions (the report says so)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: cells one after another here; ray: one Ray task per cell (pip install 'salt-bench[ray]')")
    p.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="join a running Ray cluster (default: start a private one on 127.0.0.1); the run "
                        "directory must be on a filesystem every node sees")
    p.add_argument("--gpus-per-cell", type=_positive_float(allow_zero=True), default=None,
                   help="GPUs each Ray task asks for; fractions share a GPU (default: 1 if the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-cell", type=_positive_float(allow_zero=False), default=1.0,
                   help="CPUs each Ray task asks for (default: 1)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("tune", help="tune one architecture (or all, with equal budgets) with Optuna")
    _add_config_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--arch")
    g.add_argument("--all", action="store_true")
    p.add_argument("--space", default="configs/tune/default.yaml")
    p.add_argument("--n-trials", type=_int_at_least(1), default=None,
                   help="trials to add in this invocation; re-running the same command resumes the study")
    p.add_argument("--timeout", type=_positive_float(allow_zero=False), default=None, help="seconds per architecture")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///OUT/tuning/<study>.db; postgresql://..., journal:///file.log)")
    p.add_argument("--study", default=None, help="study name (default tune-<arch>; with --all, <study>-<arch>)")
    p.add_argument("--folds", type=_ints, default=[0])
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>); studies, trials and "
                                                "<study>.best.yaml go to OUT/tuning/")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("report", help="write the self-contained HTML leaderboard of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--open", action="store_true", help="open it in a browser")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("predict", help="predict the test set and write a Kaggle submission")
    p.add_argument("run_dir")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--arch")
    g.add_argument("--ensemble", type=_csv)
    p.add_argument("--out", default=None, help="submission CSV (default: RUN_DIR/submission.csv)")
    p.add_argument("--tta", choices=["none", "flip"], default="flip")
    p.add_argument("--evaluate-oof", action="store_true",
                   help="score the choice on pooled out-of-fold predictions and record it in RUN_DIR/ensembles.csv "
                        "and postprocess.json (no test prediction)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("compare", help="B - A per architecture of two runs on the same images, paired by model and image")
    p.add_argument("run_a", help="the baseline run directory (e.g. without the head)")
    p.add_argument("run_b", help="the changed run directory (e.g. with the head); the difference is B - A")
    p.add_argument("--out", default=None, help="CSV of the table (default: RUN_B/compare/<RUN_A name>.csv)")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BenchError as exc:
        print(f"salt-bench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied: writes are atomic, so no half-written file is left
        where = exc.filename2 or exc.filename  # a rename names its target second
        print(f"salt-bench: error: {f'{where}: ' if where else ''}{exc.strerror or one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("salt-bench: interrupted; finished cells are kept, run again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
