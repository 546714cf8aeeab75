"""Score a run directory's cells into ``leaderboard.csv``, ``per_image.csv``, ``pairs.csv`` and, for a run with
``protocol.empty_head``, ``classifier.csv`` (its rows are ``bench.classifier``'s); the gallery is
``rundir.Gallery.choose``'s.

Reads only the run directory (``data.npz`` holds the train ids, images, masks and folds), so a
leaderboard can be rebuilt at any time, also from a partial run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench import classifier, postprocess, stats
from bench.data.folds import N_CLASSES, coverage_class
from bench.errors import BenchError
from bench.identity import environment
from bench.metrics import all_empty_scores, binarise, dice, iou, tgs_precision
from bench.rundir import OOF, Cell, Gallery, HoldoutPrediction, ImageSet, OofPrediction, RunDir
from bench.rundir.tables import CLASSIFIER, LEADERBOARD, PAIRS, PER_IMAGE, Aggregate


@dataclass(frozen=True)
class PooledOof:
    """Out-of-fold predictions of some cells, concatenated in the order the cells were given."""

    rows: np.ndarray  # each prediction's image: its row in the run's data.npz
    probs: np.ndarray  # uint8 levels, flip TTA
    probs_no_tta: np.ndarray
    head: np.ndarray | None  # the empty-vs-salt head's probabilities, flip TTA; None for cells without the head
    head_no_tta: np.ndarray | None

    def select(self, tta: bool, head: bool) -> np.ndarray | None:
        """The masks' (or the head's) probabilities with or without flip TTA."""
        if head:
            return self.head if tta else self.head_no_tta
        return self.probs if tta else self.probs_no_tta


def pool_oof(cell_dirs: Sequence[Path], index: dict[str, int]) -> PooledOof:
    """The cells' ``oof.npz`` concatenated: the one pooling of out-of-fold predictions, for the leaderboard (the
    folds of one (arch, seed)) and for ``salt-bench predict`` (every cell of an architecture). ``index`` maps the
    run's ``data.npz`` ids to rows; an unknown id, or the head in some cells and not in others, names the file."""
    parts: dict[str, list[np.ndarray]] = {"rows": [], "probs": [], "probs_no_tta": [], "head": [], "head_no_tta": []}
    first_head: bool | None = None
    for cell in cell_dirs:
        path = cell / OOF
        oof = OofPrediction.read(path)
        unknown = [str(i) for i in oof.ids if str(i) not in index]
        if unknown:
            raise BenchError(f"{path}: id {unknown[0]} is not in the run's data.npz")
        has_head = oof.head_probs is not None
        if first_head is None:
            first_head = has_head
        elif has_head != first_head:
            raise BenchError(f"{path}: {'has' if has_head else 'lacks'} the empty-vs-salt head's probabilities, "
                             f"unlike {cell_dirs[0] / OOF}")
        parts["rows"].append(np.array([index[str(i)] for i in oof.ids], dtype=np.int64))
        parts["probs"].append(oof.probs)
        parts["probs_no_tta"].append(oof.probs_no_tta)
        if has_head:
            parts["head"].append(oof.head_probs)
            parts["head_no_tta"].append(oof.head_probs_no_tta)
    joined = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    if joined["rows"] is None:
        raise ValueError("pool_oof: no cells given")
    return PooledOof(**joined)


@dataclass
class _Group:
    """One (architecture, seed): its pooled OOF and, when present, its models' and fold ensemble's holdout
    predictions, scored."""

    arch: str
    seed: int
    row: dict[str, Any]
    oof: pd.DataFrame  # per image: id, fold, score, empty_pred, ...
    holdout: pd.DataFrame | None  # per model (fold) and image; None unless every fold model predicted it
    ensemble: pd.DataFrame | None  # the fold ensemble per image
    probs: np.ndarray
    rows: np.ndarray
    hashes: dict[str, str]  # "arch/fold<k>-seed<s>" -> the cell hash the tables were built from
    classifier: list[dict[str, Any]]  # classifier.csv rows (OOF, holdout) of a run with the head; [] without


def _image_frame(ids: np.ndarray, fold: int | np.ndarray, truth: np.ndarray, pred: np.ndarray,
                 classes: np.ndarray) -> pd.DataFrame:
    """The per-image rows of one prediction: score, IoU, coverage class and the empty flags."""
    return pd.DataFrame({"id": ids, "fold": fold, "score": tgs_precision(truth, pred), "iou": iou(truth, pred),
                         "coverage_class": classes, "empty_truth": ~truth.any(axis=(1, 2)),
                         "empty_pred": ~pred.any(axis=(1, 2))})


def _holdout_prediction(path: Path, held: ImageSet, hashes: list[str]) -> HoldoutPrediction | None:
    """The prediction at ``path`` when it was made by exactly the models ``hashes`` on the holdout's images."""
    found = HoldoutPrediction.read(path)
    if found is None or list(found.cell_hashes) != hashes or list(found.ids) != list(held.ids):
        return None
    return found


def _score_group(run: RunDir, arch: str, seed: int, group: pd.DataFrame, data: ImageSet, index: dict[str, int],
                 classes: np.ndarray, held: ImageSet | None) -> _Group:
    ordered = group.sort_values("fold")
    pooled = pool_oof([run.cell_dir(Cell(arch, int(f), int(seed))) for f in ordered["fold"]], index)
    rows, head = pooled.rows, pooled.head
    truth, folds = data.masks[rows], data.folds[rows]
    pred, chosen = postprocess.cross_fitted(pooled.probs, truth, folds, post=False)
    thresholds = {f: d.threshold for f, d in chosen.items()}
    pred_plain, _ = postprocess.cross_fitted(pooled.probs_no_tta, truth, folds, post=False)
    # chosen on this group's pooled OOF: applied to every holdout prediction of this (arch, seed), never scored here
    decision = postprocess.decide(pooled.probs, truth, head_probs=head)
    # the holdout models' single-model pipeline, cross-fitted: each fold decided on the other folds
    single = tgs_precision(truth, postprocess.cross_fitted(pooled.probs, truth, folds, head_probs=head,
                                                           thresholds=thresholds)[0])
    scores = tgs_precision(truth, pred)
    per_fold = pd.Series(single).groupby(folds).mean()
    empty_truth, empty_pred = ~truth.any(axis=(1, 2)), ~pred.any(axis=(1, 2))
    cls = classes[rows]
    hashes = {f"{arch}/fold{int(f)}-seed{seed}": str(h) for f, h in zip(ordered["fold"], ordered["cell_hash"])}
    row = {
        "arch": arch, "seed": seed, "encoder": group["encoder"].iloc[0], "recipe": group["recipe"].iloc[0],
        "tuned": group["tuned"].iloc[0] or "", "params": int(group["params"].iloc[0]), "gmacs": group["macs"].iloc[0] / 1e9,
        "train_images_per_s": group["train_images_per_s"].mean(), "infer_images_per_s": group["infer_images_per_s"].mean(),
        "peak_mem_mb": group["peak_mem_mb"].max() if group["peak_mem_mb"].notna().any() else np.nan,
        **_cost(group),
        "oof_score": float(single.mean()), "oof_score_threshold_only": scores.mean(),
        "oof_score_no_tta": tgs_precision(truth, pred_plain).mean(),
        "oof_score_pooled_threshold": decision.score_raw, "threshold": f"{decision.threshold:.2f}",
        "fold_thresholds": " ".join(f"{thresholds[f]:.2f}" for f in sorted(thresholds)),
        "fold_mean": per_fold.mean(), "fold_std": per_fold.std(ddof=1) if len(per_fold) > 1 else np.nan,
        "iou": iou(truth, pred).mean(), "dice": dice(truth, pred).mean(),
        "empty_acc": (empty_truth == empty_pred).mean(),
        "empty_tp": int((empty_truth & empty_pred).sum()), "empty_fn": int((empty_truth & ~empty_pred).sum()),
        "empty_fp": int((~empty_truth & empty_pred).sum()), "empty_tn": int((~empty_truth & ~empty_pred).sum()),
        "checkpoint": group["checkpoint"].iloc[0], "folds_done": len(group),
        "diverged": int((group["status"] != "ok").sum()), "n_images": len(rows),
        "holdout_score": np.nan, "holdout_n": 0, "ensemble_score": np.nan, "postprocess_gain": np.nan,
        "min_area": str(decision.min_area),
        "empty_max_prob": "off" if decision.empty_max_prob is None else f"{decision.empty_max_prob:.2f}",
    }
    for c in range(N_CLASSES):
        row[f"cov_{c}"] = scores[cls == c].mean() if (cls == c).any() else np.nan
    oof = pd.DataFrame({"id": data.ids[rows], "fold": folds, "score": scores, "iou": iou(truth, pred),
                        "coverage_class": cls, "empty_truth": empty_truth, "empty_pred": empty_pred})
    if head is not None:
        row["head_cut"] = "off" if decision.head_cut is None else f"{decision.head_cut:.2f}"
        oof["head_prob"] = head
    holdout = ensemble = None
    held_probs = None
    if held is not None and len(held.ids) and (group["status"] == "ok").all():
        held_classes = coverage_class(held.masks)
        frames, plain = [], []
        for fold, cell_hash in zip(ordered["fold"], ordered["cell_hash"]):
            found = _holdout_prediction(run.holdout_model_file(Cell(arch, int(fold), seed)), held, [str(cell_hash)])
            if found is None:
                frames = []
                break
            hpred = postprocess.apply(found.probs, decision, found.head_probs)
            frame = _image_frame(held.ids, int(fold), held.masks, hpred, held_classes)
            if head is not None:
                frame["head_prob"] = found.head_probs
            frames.append(frame)
            plain.append(tgs_precision(held.masks, binarise(found.probs, decision.threshold)).mean())
        ens = _holdout_prediction(run.holdout_probs_file(arch, seed), held, list(hashes.values()))
        if frames and ens is not None:
            holdout = pd.concat(frames, ignore_index=True)
            held_probs = {"probs": ens.probs, "head_probs": ens.head_probs}
            epred = postprocess.apply(ens.probs, decision, ens.head_probs)
            ensemble = _image_frame(held.ids, -1, held.masks, epred, held_classes)
            if head is not None:
                ensemble["head_prob"] = ens.head_probs
            row.update(holdout_score=holdout["score"].mean(), holdout_n=len(held.ids),
                       ensemble_score=ensemble["score"].mean(),
                       postprocess_gain=holdout["score"].mean() - float(np.mean(plain)))
    records = []
    if head is not None:
        held_split = None if held_probs is None else (held_probs["probs"], held_probs["head_probs"], held.masks)
        cut_scores, fold_cuts = _cut_scores(pooled.probs, head, truth, folds, thresholds, decision, held_split)
        splits = {"oof": (head, truth)} if held_split is None else {"oof": (head, truth), "holdout": held_split[1:]}
        records = classifier.table_rows(arch, seed, splits, cut_scores, decision.head_cut, fold_cuts)
    return _Group(arch, seed, row, oof, holdout, ensemble, pooled.probs, rows, hashes, records)


def _cut_scores(probs: np.ndarray, head: np.ndarray, truth: np.ndarray, folds: np.ndarray,
                thresholds: dict[int, float], decision: postprocess.Decision,
                held: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> tuple[dict[str, dict[str, float]], str]:
    """The score of each image-level empty cut of ``classifier.CUTS`` per split, and each fold's own head cut.

    OOF scores are cross-fitted (each fold's threshold and cuts decided on the other folds; NaN with one fold
    done); holdout scores are the fold ensemble's under the decisions taken on the pooled OOF, so
    ``score_both_cuts`` on the holdout is the leaderboard's ``ensemble_score``.
    """
    crossfit = np.unique(folds).size > 1
    cut_scores: dict[str, dict[str, float]] = {"oof": {}} if held is None else {"oof": {}, "holdout": {}}
    fold_cuts = ""
    for column, peak, use_head in classifier.CUTS:
        given = head if use_head else None
        if crossfit:
            masks, decisions = postprocess.cross_fitted(probs, truth, folds, head_probs=given, peak=peak,
                                                        thresholds=thresholds)
            cut_scores["oof"][column] = float(tgs_precision(truth, masks).mean())
            if peak and use_head:
                fold_cuts = " ".join(_cut(decisions[f].head_cut) for f in sorted(decisions))
        else:
            cut_scores["oof"][column] = np.nan
        if held is not None:
            pooled = decision if peak and use_head else postprocess.decide(probs, truth, decision.threshold,
                                                                             head_probs=given, peak=peak)
            held_probs, held_head, held_masks = held
            masks = postprocess.apply(held_probs, pooled, held_head if use_head else None)
            cut_scores["holdout"][column] = float(tgs_precision(held_masks, masks).mean())
    return cut_scores, fold_cuts


def _cut(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def _check_environment(cells: pd.DataFrame, allow_mixed: bool, where: Path) -> list[dict[str, Any]]:
    """The distinct environments (device, dtype, versions, code) of the cells; more than one is refused unless allowed."""
    envs = {json.dumps(environment(ident), sort_keys=True) for ident in cells["identity"]}
    if len(envs) > 1 and not allow_mixed:
        listed = "; ".join(sorted(envs))
        raise BenchError(f"{where}: cells ran in {len(envs)} different environments ({listed}); their scores are not "
                         "comparable as they stand: rerun them in one, or pass --allow-mixed to rank them anyway")
    return [json.loads(e) for e in sorted(envs)]


@dataclass
class _Ranked:
    """What the verdict ranks: the complete architectures' per-image scores (archs, folds, seeds, images), and
    what each incomplete architecture lacks."""

    source: str
    archs: list[str]
    scores: np.ndarray
    pred_empty: np.ndarray
    truth_empty: np.ndarray
    lacking: dict[str, str]


def _lacks(run: RunDir, arch: str, n_folds: int, seeds: list[int], groups: dict[tuple[str, int], _Group],
           source: str) -> str:
    """What keeps ``arch`` out of the ranking ("" when nothing does)."""
    missing = []
    for seed in seeds:
        group = groups.get((arch, seed))
        done = set() if group is None else {int(f) for f in group.oof["fold"].unique()}
        for fold in range(n_folds):
            cell = Cell(arch, fold, seed)
            if fold not in done:
                missing.append(f"{cell.name} not trained")
        if group is not None and len(done) == n_folds:
            if group.row["diverged"]:
                missing.append(f"seed {seed} has a diverged fold")
            elif source == "holdout" and group.holdout is None:
                missing.append(f"seed {seed} has no current holdout prediction")
    return "; ".join(missing)


def _ranked(run: RunDir, groups: dict[tuple[str, int], _Group], held: ImageSet | None) -> _Ranked:
    """The architectures with every model of the protocol (and its holdout prediction) ranked on the holdout;
    without a holdout, or with no architecture complete, every architecture on the cross-fitted OOF of the seeds
    all have, over the images all scored."""
    record = run.protocol()
    proto = {} if record is None else record.shared
    n_folds, seeds = int(proto.get("folds", 0)), sorted(int(s) for s in proto.get("seeds", []))
    archs = sorted({a for a, _ in groups})
    has_holdout = held is not None and len(held.ids) > 0
    lacking = {a: _lacks(run, a, n_folds, seeds, groups, "holdout") for a in archs}
    complete = [a for a in archs if not lacking[a]]
    if has_holdout and complete:
        frames = {(a, s): groups[(a, s)].holdout for a in complete for s in seeds}
        scores = np.stack([np.stack([frames[(a, s)].pivot(index="fold", columns="id", values="score")
                                     .loc[:, held.ids].to_numpy() for s in seeds], axis=1) for a in complete])
        empty = np.stack([np.stack([frames[(a, s)].pivot(index="fold", columns="id", values="empty_pred")
                                    .loc[:, held.ids].to_numpy(bool) for s in seeds], axis=1) for a in complete])
        return _Ranked("holdout", complete, scores, empty, ~held.masks.any(axis=(1, 2)),
                       {a: why for a, why in lacking.items() if why})
    common = sorted(set.intersection(*({s for a2, s in groups if a2 == a} for a in archs)))
    if not common:
        raise BenchError(f"{run.path}: no seed has finished cells of every architecture ("
                         + "; ".join(f"{a}: {lacking[a] or 'complete'}" for a in archs) + "); train the missing cells")
    frames = {(a, s): groups[(a, s)].oof.set_index("id") for a in archs for s in common}
    images = sorted(set.intersection(*(set(f.index) for f in frames.values())))
    if not images:
        raise BenchError(f"{run.path}: no image was scored by every architecture and seed ("
                         + "; ".join(f"{a}: {lacking[a]}" for a in archs if lacking[a]) + ")")
    first = frames[(archs[0], common[0])].loc[images]
    fold_of = first["fold"].to_numpy()
    shape = (len(archs), n_folds, len(common), len(images))
    scores, empty = np.full(shape, np.nan), np.zeros(shape, bool)
    cols = np.arange(len(images))
    for ai, a in enumerate(archs):
        for si, s in enumerate(common):
            f = frames[(a, s)].loc[images]
            scores[ai, fold_of, si, cols] = f["score"].to_numpy()
            empty[ai, fold_of, si, cols] = f["empty_pred"].to_numpy(bool)
    scores = scores[:, np.unique(fold_of)]
    empty = empty[:, np.unique(fold_of)]
    return _Ranked("oof", archs, scores, empty, first["empty_truth"].to_numpy(bool), {})


#: leaderboard columns taken from the verdict table (``bench.stats.COLUMNS``) besides the score
VERDICT_COLUMNS = [c for c in stats.COLUMNS if c not in ("arch", "score")]


def aggregate(run_dir: Path | RunDir, *, allow_mixed: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leaderboard (one row per architecture, ranked with its evidence) and per-image scores.

    The ranked score is the expected holdout score of one model trained by the protocol (the mean over the
    architecture's trained models) when the architecture has every model and its holdout prediction; else the
    cross-fitted out-of-fold score. All files are written atomically and ``aggregate.json`` last, recording the
    cells (and their hashes) and the tables' digests: without it, or when it disagrees, they are rebuilt.
    """
    run = RunDir(run_dir)
    data = run.load_data()
    index = {str(i): k for k, i in enumerate(data.ids)}
    classes = coverage_class(data.masks)
    cells = run.metrics_table()
    if cells.empty:
        return pd.DataFrame(), pd.DataFrame()
    environments = _check_environment(cells, allow_mixed, run.path)
    held = run.load_holdout() if run.holdout_data_file.is_file() else None
    groups = {(arch, seed): _score_group(run, arch, seed, group, data, index, classes, held)
              for (arch, seed), group in cells.groupby(["arch", "seed"], sort=True)}
    ranked = _ranked(run, groups, held)
    record = run.protocol()
    rope = (record.shared if record is not None else {}).get("rope", stats.ROPE)
    verdict = stats.verdict_table(ranked.scores, ranked.archs, truth_empty=ranked.truth_empty,
                                  pred_empty=ranked.pred_empty, rope=rope)
    board = _board(groups, ranked, verdict)
    per_image = _per_image(groups)
    run.aggregate_file.unlink(missing_ok=True)
    tables = _write_tables(run, groups, board, per_image, verdict.attrs["pairs"])
    gallery = Gallery.choose(data, board["arch"].tolist(), per_image[per_image["split"] == "oof"],
                             _gallery_probs(groups, len(data.ids), data.masks.shape[1:]))
    if gallery is not None:
        gallery.write(run.gallery_file)
    components = verdict.set_index("arch")[["n_models", "collapsed", "image_sd", "replicate_sd", "fold_sd", "seed_sd"]]
    Aggregate(
        score_source=ranked.source, replicate=verdict.attrs["replicate"],
        n_ranked_images=int(verdict.attrs["n_images"]), n_models=int(verdict.attrs["n_replicates"]),
        n_seeds=int(ranked.scores.shape[2]), rope=verdict.attrs["rope"], alpha=verdict.attrs["alpha"],
        seeds_to_resolve=verdict.attrs["seeds_to_resolve"], ranked=ranked.archs, incomplete=ranked.lacking,
        variance={a: {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                  for a, row in components.astype(object).to_dict("index").items()},
        cells={name: h for g in groups.values() for name, h in sorted(g.hashes.items())},
        tables={path.name: _digest(text) for path, text in tables.items()},
        environments=environments, mixed_environments=len(environments) > 1,
        all_empty_oof=float(all_empty_scores(data.masks).mean()),
        all_empty_holdout=float(all_empty_scores(held.masks).mean()) if held is not None and len(held.ids) else None,
    ).write(run.aggregate_file)
    return board, per_image


def _board(groups: dict[tuple[str, int], _Group], ranked: _Ranked, verdict: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture: its seeds' rows averaged (decisions listed per seed), the verdict's columns, the
    ranked score where the architecture is ranked, sorted and numbered."""
    per_seed = pd.DataFrame([g.row for g in groups.values()])
    numeric = {c: "mean" for c in per_seed.columns if pd.api.types.is_numeric_dtype(per_seed[c])}
    board = per_seed.groupby("arch", sort=False).agg(
        {c: numeric.get(c, _per_seed) for c in per_seed.columns if c not in ("arch", "seed")})
    for decision in ("threshold", "min_area", "empty_max_prob", "head_cut"):
        if decision in per_seed:  # decisions are shown per seed (seed order), never averaged
            board[decision] = per_seed.sort_values("seed").groupby("arch")[decision].agg(" ".join)
    board["seeds"] = per_seed.groupby("arch")["seed"].nunique()
    board = board.reset_index().merge(verdict, on="arch", how="left", suffixes=("", "_ranked"))
    ranked_here = board["arch"].isin(ranked.archs)
    board["score"] = board["score"].where(ranked_here)
    board["score_source"] = np.where(ranked_here, ranked.source, "")
    if ranked.source == "holdout":
        board["optimism"] = board["oof_score"] - board["holdout_score"]
        board["ensemble_gain"] = board["ensemble_score"] - board["holdout_score"]
    else:
        board["optimism"] = np.nan
        board["ensemble_gain"] = np.nan
    for arch, why in ranked.lacking.items():
        board.loc[board["arch"] == arch, "verdict"] = f"incomplete: {why}"
    board["n_ranked_images"] = verdict.attrs["n_images"]
    board = board.sort_values(["score", "oof_score"], ascending=False, kind="stable", na_position="last")
    board = board.reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board[[*LEAD_COLUMNS, *[c for c in board.columns if c not in LEAD_COLUMNS]]]


def _per_image(groups: dict[tuple[str, int], _Group]) -> pd.DataFrame:
    """Every image's score by every (architecture, seed): out-of-fold, on the holdout, and by the fold ensemble."""
    per_image = pd.concat([g.oof.assign(arch=g.arch, seed=g.seed, split="oof") for g in groups.values()]
                          + [g.holdout.assign(arch=g.arch, seed=g.seed, split="holdout") for g in groups.values()
                             if g.holdout is not None]
                          + [g.ensemble.assign(arch=g.arch, seed=g.seed, split="ensemble") for g in groups.values()
                             if g.ensemble is not None], ignore_index=True)
    return per_image[["id", "split", "fold", "arch", "seed", "score", "iou", "coverage_class", "empty_truth",
                      "empty_pred", *(["head_prob"] if "head_prob" in per_image else [])]]


def _write_tables(run: RunDir, groups: dict[tuple[str, int], _Group], board: pd.DataFrame, per_image: pd.DataFrame,
                  pairs: pd.DataFrame) -> dict[Path, str]:
    """Write the CSV tables; each path with the text written, whose digest ``aggregate.json`` records."""
    tables = {run.leaderboard_file: LEADERBOARD.write(run.leaderboard_file, board),
              run.per_image_file: PER_IMAGE.write(run.per_image_file, per_image),
              run.pairs_file: PAIRS.write(run.pairs_file, pairs)}
    records = [r for g in groups.values() for r in g.classifier]
    if records:
        tables[run.classifier_file] = CLASSIFIER.write(run.classifier_file, pd.DataFrame(records))
    return tables


def _gallery_probs(groups: dict[tuple[str, int], _Group], n_images: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Each architecture's out-of-fold probability levels of its first seed, on every development image."""
    probs = {}
    for g in groups.values():
        if g.seed == min(s for a, s in groups if a == g.arch):
            full = np.zeros((n_images, *shape), np.uint8)
            full[g.rows] = g.probs
            probs[g.arch] = full
    return probs


def _per_seed(values: pd.Series) -> str:
    return values.iloc[0]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


#: the leaderboard's first columns, in this order (outside tools read them by name)
#: leaderboard columns measured on the device (time, memory): they differ between any two runs of the same cells
MEASURED = ["train_images_per_s", "infer_images_per_s", "peak_mem_mb", "train_s", "infer_ms"]
LEAD_COLUMNS = ["rank", "arch", "score", "score_source", "holdout_score", "oof_score", "optimism", "p_best", "rank_lo",
                "rank_hi", "learned", "verdict", "recipe", "tuned", "ensemble_score", "ensemble_gain",
                "postprocess_gain", "n_models", "collapsed", "se", "ci_lo", "ci_hi"]


def _fresh(run: RunDir) -> bool:
    """True when the last aggregation (``aggregate.json``, written last) was built from exactly the finished cells
    as they are now (names and cell hashes) and every table beside it is the one it wrote (digests)."""
    if not run.aggregate_file.is_file():
        return False
    try:
        last = Aggregate.read(run.aggregate_file)
        recorded, digests = dict(last.cells), dict(last.tables)
    except (BenchError, ValueError, TypeError):
        return False
    try:
        now = {f"{c.arch}/{c.name}": run.cell_metrics(c).cell_hash for c in run.done_cells()}
    except BenchError:
        return False  # an unreadable cell record: the aggregation says which, in one line
    if recorded != now or run.leaderboard_file.name not in digests or run.per_image_file.name not in digests:
        return False
    for name, digest in digests.items():
        path = run.path / name
        try:
            if _digest(path.read_text(encoding="utf-8")) != digest:
                return False
        except (OSError, UnicodeDecodeError):
            return False
    return True


def read_current(run_dir: Path | RunDir) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The leaderboard and per-image tables as the run directory holds them, when the last aggregation is current
    (``_fresh``); None when it is missing or stale. Reads only: a reader (the report) never aggregates."""
    run = RunDir(run_dir)
    if not _fresh(run):
        return None
    return LEADERBOARD.read(run.leaderboard_file), PER_IMAGE.read(run.per_image_file)


def current(run_dir: Path | RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard and per-image tables of a run with finished cells as of now: read from the run directory
    when the last aggregation is current, else aggregated again (a partial or resumed run is never stale). For the
    commands that need them current (``report``, ``compare``)."""
    run = RunDir(run_dir)
    if not run.data_file.is_file():
        raise BenchError(f"{run.data_file}: missing, but the run has finished cells")
    tables = read_current(run)
    return tables if tables is not None else aggregate(run)


def _cost(group: pd.DataFrame) -> dict[str, float]:
    """What one trained model of the group cost (``bench.cost``): epochs, counted training PFLOP, device-seconds of
    training, batch-1 latency (ms). NaN for cells written before cost was recorded."""
    def mean(column: str, scale: float = 1.0) -> float:
        return float(group[column].mean()) / scale if column in group and group[column].notna().any() else np.nan

    return {"epochs": mean("epochs"), "train_pflop": mean("train_flops", 1e15), "train_s": mean("train_s"),
            "infer_ms": mean("infer_ms")}
