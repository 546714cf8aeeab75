"""``salt-bench predict``: the test set through a run's fold models, as a Kaggle submission.

Every choice comes from out-of-fold data only: the probability threshold and the post-processing
(``bench.postprocess``) are decided on the pooled OOF probabilities of exactly what is predicted (one
architecture or an ensemble, with or without flip TTA) and recorded in ``<run>/postprocess.json``.
Probabilities are averaged over folds and seeds within an architecture, then over the ensemble's
architectures, and quantised to uint8 levels like the stored OOF probabilities, so the OOF decision
applies to the test probabilities unchanged. In a run with ``protocol.empty_head`` the head's probabilities
are averaged the same way and its cut is one more OOF decision (``head_cut`` in ``postprocess.json``).

``--evaluate-oof`` stops after the OOF decision and records it in ``<run>/ensembles.csv`` (the report
lists that file); it needs no models and no test data.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import atomic, postprocess, results, runtime
from bench.cell.prediction import load_model
from bench.config import Config
from bench.data import source, tgs
from bench.data.rle import rle_encode
from bench.errors import BenchError
from bench.inference import ensemble_outputs, normalisation, quantise
from bench.rundir import METRICS, MODEL, OOF, Cell, CellRecord, Ensembles, PostprocessDecisions, RunDir, read_weights
from bench.rundir.tables import LEADERBOARD

_CHUNK = 1024  # test images per predict_outputs call: the progress bar's step
_BATCH = 128


@dataclass(frozen=True)
class Selection:
    """What is predicted: the architectures (sorted, so an ensemble has one name) and the TTA."""

    members: tuple[str, ...]
    tta: str

    @property
    def name(self) -> str:
        return "+".join(self.members)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.tta}"


def select(run: RunDir, arch: str | None, ensemble: list[str] | None, tta: str) -> Selection:
    """``--arch``, ``--ensemble`` or, with neither, the leaderboard's rank-1 architecture."""
    if ensemble is not None:
        if not ensemble:
            raise BenchError("--ensemble: no architectures given")
        twice = sorted({a for a in ensemble if ensemble.count(a) > 1})
        if twice:
            raise BenchError(f"--ensemble: {twice[0]} is listed twice")
        members = sorted(ensemble)
    elif arch is not None:
        members = [arch]
    else:
        board_path = run.leaderboard_file
        if not board_path.is_file():
            raise BenchError(f"{board_path}: missing; pass --arch or --ensemble, or finish the run first")
        board = LEADERBOARD.read(board_path)
        if board.empty or "arch" not in board:
            raise BenchError(f"{board_path}: no architectures ranked; pass --arch or --ensemble")
        members = [str(board.sort_values("rank")["arch"].iloc[0])]
    trained = run.trained_archs()
    for a in members:
        if a not in trained:
            raise BenchError(f"{run.cells_dir / a}: architecture {a} has no cells in this run "
                             f"(trained: {', '.join(trained) or 'none'})")
    return Selection(tuple(members), tta)


def cell_dirs(run: RunDir, cfg: Config, sel: Selection, *, need_models: bool) -> dict[str, list[Path]]:
    """Every (fold, seed) cell directory of each member; a missing or unusable cell is named in the error. Its record
    and, with ``need_models``, its weights are read here, before anything is written or predicted."""
    out: dict[str, list[Path]] = {}
    for arch in sel.members:
        dirs = [run.cell_dir(c) for c in Cell.grid([arch], range(cfg.protocol.folds), cfg.protocol.seeds)]
        for cell in dirs:
            needed = [METRICS, OOF] + ([MODEL] if need_models else [])
            missing = [f for f in needed if not (cell / f).is_file()]
            if missing:
                raise BenchError(f"{cell}: missing {missing[0]} ({_why_missing(cell, missing)})")
            CellRecord.read(cell / METRICS)
            if need_models:
                read_weights(cell / MODEL)
        out[arch] = dirs
    return out


def _why_missing(cell: Path, missing: list[str]) -> str:
    if METRICS in missing:
        return "the cell is not finished; run `salt-bench run` on this run directory to train it"
    if CellRecord.read(cell / METRICS).status != "ok":
        return "the cell diverged and kept no model"
    return "the cell's files are incomplete"


def _round_levels(levels_mean: np.ndarray) -> np.ndarray:
    """A mean of uint8 probability levels, rounded back to a level."""
    return np.clip(np.round(levels_mean), 0, 255).astype(np.uint8)


def oof_mean(cells: dict[str, list[Path]], ids: np.ndarray, tta: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled OOF probability levels (N, 101, 101) uint8 and head probabilities (N,) (None for cells without the
    head) in ``ids`` order: the mean over seeds, then members, of the cells' out-of-fold predictions
    (``results.pool_oof``), with or without flip TTA."""
    index = {str(i): k for k, i in enumerate(ids)}
    flip = tta == "flip"
    total: np.ndarray | None = None
    head_total: np.ndarray | None = None
    first_head: bool | None = None
    for dirs in cells.values():
        pooled = results.pool_oof(dirs, index)
        seen = np.bincount(pooled.rows, minlength=len(ids))
        if seen.min() == 0 or seen.min() != seen.max():
            raise BenchError(f"{dirs[0].parent}: out-of-fold predictions do not cover every train image "
                             "of the run's data.npz equally often (once per seed)")
        if first_head is None:
            first_head = pooled.head is not None
        elif (pooled.head is not None) != first_head:
            raise BenchError(f"{dirs[0] / OOF}: {'has' if pooled.head is not None else 'lacks'} the empty-vs-salt "
                             f"head's probabilities, unlike {next(iter(cells.values()))[0] / OOF}")
        member = _seed_mean(pooled.rows, pooled.select(flip, head=False), len(ids), seen[0])
        total = member if total is None else total + member
        if first_head:
            member_head = _seed_mean(pooled.rows, pooled.select(flip, head=True), len(ids), seen[0])
            head_total = member_head if head_total is None else head_total + member_head
    return _round_levels(total / len(cells)), None if head_total is None else head_total / len(cells)


def _seed_mean(rows: np.ndarray, values: np.ndarray, n: int, per_image: int) -> np.ndarray:
    """Per image of ``n`` (each in ``rows`` exactly ``per_image`` times), the mean (float32) of its predictions,
    added in the order pooled (seed order)."""
    # the stable sort keeps each image's predictions in pooled order: column j holds every image's j-th
    occurrence = np.argsort(rows, kind="stable").reshape(n, per_image)
    member = np.zeros((n, *values.shape[1:]), np.float32)
    for j in range(per_image):
        member += values[occurrence[:, j]]
    member /= per_image
    return member


def load_test_set(cfg: Config) -> tuple[list[str], np.ndarray]:
    """Test ids (``sample_submission.csv`` order) and images of the run's data source, checked by ``bench.data.tgs``."""
    folder = source.resolve(cfg.data)
    data = tgs.load(folder)
    ids = data.test_ids()
    if not ids:
        raise BenchError(f"{folder / 'test' / 'images'}: no test images to predict")
    return ids, data.test_images()


def predict_test(cfg: Config, cells: dict[str, list[Path]], images: np.ndarray, mean: float, std: float,
                 device: torch.device, tta: str, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Test probability levels (N, 101, 101) uint8 and head probabilities (N,) (None without the head): the mean over
    each member's fold/seed models (``inference.ensemble_outputs``), then over members, in the run's arithmetic."""
    from tqdm.auto import tqdm

    arithmetic = runtime.arithmetic(cfg.runtime, device)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1).to(device)
    n_models = sum(len(d) for d in cells.values())
    total: torch.Tensor | None = None
    head_total: torch.Tensor | None = None
    has_head = True
    with tqdm(total=n_models * x.shape[0], desc="predict", unit="img", disable=not progress) as bar:
        for dirs in cells.values():
            models = (load_model(cell, device) for cell in dirs)
            member, head = ensemble_outputs(models, x, cfg.protocol.input, mean, std, arithmetic, tta=tta == "flip",
                                            batch_size=_BATCH, chunk=_CHUNK, progress=bar.update)
            total = member if total is None else total + member
            has_head = has_head and head is not None
            if has_head:
                head_total = head if head_total is None else head_total + head
    head = (head_total / len(cells)).cpu().numpy() if has_head else None
    return quantise(total / len(cells)), head


def record_decision(run: RunDir, cfg: Config, sel: Selection, decision: postprocess.Decision, n_images: int) -> dict:
    """Add (or replace) this selection's entry in ``<run>/postprocess.json``, atomically; returns the entry."""
    table = PostprocessDecisions.read(run.postprocess_file).entries
    entry = {"members": list(sel.members), "tta": sel.tta, "folds": cfg.protocol.folds,
             "seeds": list(cfg.protocol.seeds), "n_images": n_images, "protocol_hash": run.protocol_hash(),
             **decision.to_dict()}
    table[sel.key] = entry
    PostprocessDecisions(table).write(run.postprocess_file)
    return entry


def record_ensemble(run: RunDir, sel: Selection, decision: postprocess.Decision, n_images: int,
                    score_crossfit: float = float("nan")) -> pd.DataFrame:
    """Add (or replace) this selection's row in ``<run>/ensembles.csv`` (best ``score_post`` first), atomically."""
    path = run.ensembles_file
    row = pd.DataFrame([{"members": sel.name, "tta": sel.tta, "threshold": decision.threshold,
                         "min_area": decision.min_area, "empty_max_prob": decision.empty_max_prob,
                         "score_raw": decision.score_raw, "score_post": decision.score_post,
                         "score_crossfit": score_crossfit, "n_images": n_images}],
                       columns=list(Ensembles.COLUMNS))
    if path.is_file():
        old = Ensembles.read(path).table
        old = old[~((old["members"] == sel.name) & (old["tta"] == sel.tta))]
        row = pd.concat([old, row], ignore_index=True) if len(old) else row
    table = row.sort_values("score_post", ascending=False, kind="stable").reset_index(drop=True)
    Ensembles(table).write(path)
    return table


def submission_text(ids: list[str], masks: np.ndarray) -> str:
    """``id,rle_mask`` CSV, one row per id in the given order, empty string for an empty mask."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "rle_mask"])
    writer.writerows((i, rle_encode(m)) for i, m in zip(ids, masks))
    return buf.getvalue()


def _describe(sel: Selection, d: postprocess.Decision) -> str:
    steps = []
    if d.min_area:
        steps.append(f"masks under {d.min_area} px emptied")
    if d.empty_max_prob is not None:
        steps.append(f"images with peak probability <= {d.empty_max_prob:.2f} emptied")
    if d.head_cut is not None:
        steps.append(f"images with head probability of salt <= {d.head_cut:.2f} emptied")
    return (f"{sel.name} (tta {sel.tta}): threshold {d.threshold:.2f}, post-processing: "
            f"{'; '.join(steps) or 'none (nothing improved the OOF score)'}\n"
            f"pooled OOF TGS score {d.score_raw:.4f} -> {d.score_post:.4f} after post-processing")


def predict(run_dir: Path, *, arch: str | None = None, ensemble: list[str] | None = None, tta: str = "flip",
            out: Path | None = None, evaluate_oof: bool = False) -> Path | None:
    """``salt-bench predict``: decide on OOF, then (unless ``evaluate_oof``) predict the test set and write the
    submission. Returns the submission's path (None with ``evaluate_oof``)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise BenchError(f"{run}: no such run directory")
    cfg = run.config()
    sel = select(run, arch, ensemble, tta)
    cells = cell_dirs(run, cfg, sel, need_models=not evaluate_oof)
    data = run.load_data()
    test = None if evaluate_oof else load_test_set(cfg)  # before anything is written: its errors come first
    device = runtime.setup(cfg)
    levels, head = oof_mean(cells, data.ids, sel.tta)
    decision = postprocess.decide(levels, data.masks, head_probs=head)
    record_decision(run, cfg, sel, decision, len(data.ids))
    print(_describe(sel, decision))
    print(f"recorded in {run.postprocess_file}")
    if test is None:
        crossfit = postprocess.cross_fitted_score(levels, data.masks, data.folds, head_probs=head)
        print(f"cross-fitted OOF TGS score (each fold post-processed as decided on the others): {crossfit:.4f}")
        record_ensemble(run, sel, decision, len(data.ids), crossfit)
        print(f"recorded in {run.ensembles_file}")
        return None

    mean, std = normalisation(data.images)  # the development set's, as in training
    test_ids, test_images = test
    probs, test_head = predict_test(cfg, cells, test_images, mean, std, device, sel.tta)
    masks = postprocess.apply(probs, decision, test_head)
    path = Path(out) if out else run.submission_file
    atomic.write_text(path, submission_text(test_ids, masks))
    print(f"wrote {path}: {len(test_ids)} test images, {int((~masks.any(axis=(1, 2))).sum())} predicted empty")
    return path
