"""``salt-bench compare RUN_A RUN_B``: what the one protocol difference allowed, ``protocol.empty_head``, is worth.

The head's effect needs two runs on the same data under the same protocol, one with the head and one without
(run A the baseline, run B the change). Per architecture both trained, the per-image scores each leaderboard
ranks (the locked holdout's when both runs have it, else the cross-fitted out-of-fold ones) are averaged over
the seeds both ran and paired on the images both scored. B - A is tested as the leaderboard's verdict tests a
difference (``bench.stats``): the mean per-image difference, a sign-flip permutation p, Holm-adjusted across
the architectures, and a percentile bootstrap CI.

Refused, in one line: one run directory given twice (however its path is spelled), runs whose protocols differ
in anything else, whose images differ, or whose architectures were trained with other model options or recipes
(then the difference would not be the head's).
The table goes to ``RUN_B/compare/<RUN_A>.csv`` (or ``--out``), where RUN_B's report shows it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import atomic, results, stats
from bench.errors import BenchError
from bench.rundir import RunDir

ALLOWED = "protocol.empty_head"  # the one protocol key the two runs may differ in
COLUMNS = ["arch", "split", "n_images", "seeds", "head_a", "head_b", "score_a", "score_b", "diff", "ci_lo", "ci_hi",
           "perm_p", "perm_holm"]
_MISSING = object()  # a key one protocol record has and the other lacks


def _differences(a: Any, b: Any, key: str = "") -> list[str]:
    """Dotted keys at which two protocol records differ (a missing key differs from any value), ``ALLOWED`` aside."""
    if key == ALLOWED:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k, _MISSING), b.get(k, _MISSING), f"{key}.{k}" if key else str(k))]
    return [] if a == b else [key]


def _describe(value: Any) -> str:
    return "absent" if value is _MISSING else repr(value)


def _lookup(record: dict[str, Any], key: str) -> Any:
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _head_label(record: dict[str, Any]) -> str:
    head = (record.get("protocol") or {}).get("empty_head")
    return "off" if not head else " ".join(f"{k}={v:g}" for k, v in sorted(head.items()))


def _protocol_record(run: RunDir) -> dict[str, Any]:
    if not run.path.is_dir():
        raise BenchError(f"{run}: no such run directory")
    if not run.protocol_file.is_file():
        raise BenchError(f"{run}: not a salt-bench run directory (no protocol.json)")
    try:
        record = atomic.read_json(run.protocol_file)["protocol"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BenchError(f"{run.protocol_file}: unreadable") from None
    return record


def check_protocols(run_a: RunDir, run_b: RunDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both runs' protocol records, refusing a difference other than ``protocol.empty_head``."""
    a, b = _protocol_record(run_a), _protocol_record(run_b)
    diff = _differences(a, b)
    if diff:
        key = diff[0]
        more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
        raise BenchError(f"{run_a} and {run_b} differ in {key} ({_describe(_lookup(a, key))} vs "
                         f"{_describe(_lookup(b, key))}){more}; only {ALLOWED} may differ")
    return a, b


def check_images(run_a: RunDir, run_b: RunDir) -> None:
    """The same development images (ids, masks, folds) and the same holdout in both runs."""
    pairs = [(run_a.load_data(), run_b.load_data(), ("ids", "masks", "folds"), "development")]
    if run_a.holdout_data_file.is_file() or run_b.holdout_data_file.is_file():
        pairs.append((run_a.load_holdout() if run_a.holdout_data_file.is_file() else {},
                      run_b.load_holdout() if run_b.holdout_data_file.is_file() else {}, ("ids", "masks"), "holdout"))
    for a, b, keys, what in pairs:
        for key in keys:
            if key not in a or key not in b or not np.array_equal(a[key], b[key]):
                raise BenchError(f"{run_a} and {run_b} hold different {what} images ({key} differ): "
                                 "a paired comparison needs the same images")


def _settings(run: RunDir) -> dict[str, dict[str, Any]]:
    """Per architecture: its model options (the head aside) and recipe as its cells recorded them."""
    cells = run.metrics_table()
    if cells.empty:
        return {}
    out = {}
    for arch, group in cells.groupby("arch"):
        row = group.iloc[0]
        out[str(arch)] = {"model": {k: v for k, v in row["arch_kwargs"].items() if k != "empty_head"},
                          "train": row.get("arch_train") or {}}
    return out


def _scores(per_image: pd.DataFrame, arch: str, split: str, seeds: list[int]) -> pd.Series:
    """Per image id: the score averaged over ``seeds``, for images every one of those seeds scored."""
    rows = per_image[(per_image["arch"] == arch) & (per_image["split"] == split) & per_image["seed"].isin(seeds)]
    table = rows.pivot_table(index="id", columns="seed", values="score", aggfunc="mean").dropna()
    return table.mean(axis=1)


def compare(run_a: Path | RunDir, run_b: Path | RunDir, out: Path | None = None) -> tuple[pd.DataFrame, Path]:
    """Pair B's per-image scores with A's per architecture, test B - A, write the table; returns it and its path."""
    run_a, run_b = RunDir(run_a), RunDir(run_b)
    if run_a.path.resolve() == run_b.path.resolve():
        raise BenchError(f"{run_a} and {run_b} are the same run directory: compare pairs two runs, one without "
                         f"{ALLOWED} and one with it")
    record_a, record_b = check_protocols(run_a, run_b)
    check_images(run_a, run_b)
    settings_a, settings_b = _settings(run_a), _settings(run_b)
    archs = sorted(set(settings_a) & set(settings_b))
    if not archs:
        raise BenchError(f"{run_a} and {run_b} have no finished architecture in common")
    for arch in archs:
        if settings_a[arch] != settings_b[arch]:
            raise BenchError(f"{arch} was trained with {settings_a[arch]} in {run_a} but {settings_b[arch]} in {run_b}: "
                             "only the protocol's empty_head may differ")
    per_a, per_b = results.current(run_a)[1], results.current(run_b)[1]
    rows = []
    for arch in archs:
        split = "holdout" if all(((p["arch"] == arch) & (p["split"] == "holdout")).any() for p in (per_a, per_b)) else "oof"
        seeds = sorted(set(per_a.loc[per_a["arch"] == arch, "seed"]) & set(per_b.loc[per_b["arch"] == arch, "seed"]))
        a, b = _scores(per_a, arch, split, seeds), _scores(per_b, arch, split, seeds)
        common = a.index.intersection(b.index).sort_values()
        if common.empty:
            raise BenchError(f"{arch}: no {split} image scored by the same seeds in both {run_a} and {run_b}")
        diff = b.loc[common].to_numpy() - a.loc[common].to_numpy()
        ci = stats.bootstrap_ci(diff)
        rows.append({"arch": arch, "split": split, "n_images": len(common), "seeds": " ".join(map(str, seeds)),
                     "head_a": _head_label(record_a), "head_b": _head_label(record_b),
                     "score_a": float(a.loc[common].mean()), "score_b": float(b.loc[common].mean()),
                     "diff": ci.mean, "ci_lo": ci.lo, "ci_hi": ci.hi, "perm_p": stats.paired_permutation_p(diff)})
    table = pd.DataFrame(rows)
    table["perm_holm"] = stats.holm(table["perm_p"].to_numpy())
    table = table[COLUMNS]
    path = Path(out) if out is not None else run_b.compare_file(run_a)
    atomic.write_text(path, table.to_csv(index=False))
    return table, path


def format_table(table: pd.DataFrame, run_a: Path, run_b: Path) -> str:
    """The console table, with what B - A means."""
    view = table.drop(columns=["head_a", "head_b"])
    text = view.to_string(index=False, float_format=lambda v: "n/a" if math.isnan(v) else f"{v:.4f}")
    first = table.iloc[0]
    return (f"B - A per image: A = {run_a} (empty_head {first['head_a']}), B = {run_b} (empty_head {first['head_b']}); "
            "sign-flip p Holm-adjusted across architectures, 95% bootstrap CI\n" + text)
