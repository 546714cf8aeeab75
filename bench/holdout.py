"""The locked holdout, predicted once at the end of a run by every trained model and by each fold ensemble.

Nothing before this step reads ``holdout.npz``: training, validation, threshold and post-processing choices,
tuning. Here every finished (architecture, seed) with all its folds done predicts the holdout images with each of
its fold models (flip TTA), stored per model (the replicates the verdict ranks, ``bench.stats``) and averaged over
the folds (the fold ensemble: what a submission from this run would be). Probabilities are stored as uint8
levels, the empty-vs-salt head's (``protocol.empty_head``) as float32; the threshold and post-processing applied
to them are chosen on that (architecture, seed)'s pooled out-of-fold predictions (``bench.results``). A
prediction is redone only when a model behind it changed (its cell hash).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.cell.prediction import load_model
from bench.config import Config
from bench.inference import ensemble_outputs, normalisation, quantise
from bench.rundir import Cell, CellRecord, HoldoutPrediction, RunDir


def complete_groups(run: RunDir, n_folds: int) -> dict[tuple[str, int], list[tuple[Cell, str]]]:
    """(arch, seed) -> its (cell, cell hash) pairs, for the groups with every fold finished and ok."""
    groups: dict[tuple[str, int], list[tuple[Cell, CellRecord]]] = {}
    for cell in run.done_cells():
        groups.setdefault((cell.arch, cell.seed), []).append((cell, run.cell_metrics(cell)))
    return {k: [(c, m.cell_hash) for c, m in v] for k, v in groups.items()
            if len(v) == n_folds and all(m.status == "ok" for _, m in v)}


def _current(path, hashes: list[str]) -> bool:
    found = HoldoutPrediction.read(path)
    return found is not None and list(found.cell_hashes) == hashes


def _write(path: Path, ids: np.ndarray, probs: torch.Tensor, hashes: list[str], head: torch.Tensor | None) -> None:
    head_probs = None if head is None else head.cpu().numpy().astype(np.float32)
    HoldoutPrediction(ids, quantise(probs), tuple(hashes), head_probs).write(path)


def _write_model(run: RunDir, ids: np.ndarray, members: list[tuple[Cell, str]], k: int, probs: torch.Tensor,
                 head: torch.Tensor | None) -> None:
    """One fold model's own holdout prediction (``ensemble_outputs`` hands over each model's)."""
    cell, cell_hash = members[k]
    _write(run.holdout_model_file(cell), ids, probs, [cell_hash], head)


def predict(run: RunDir, cfg: Config, device: torch.device, arithmetic: str, *,
            progress: bool = True) -> list[tuple[str, int]]:
    """Write each model's and each fold ensemble's holdout prediction, in ``arithmetic`` (the cells'), where a
    current one is missing; returns the (arch, seed) groups predicted."""
    if not run.holdout_data_file.is_file():
        return []
    stale = []
    for (arch, seed), members in sorted(complete_groups(run, cfg.protocol.folds).items()):
        hashes = [h for _, h in members]
        if not (_current(run.holdout_probs_file(arch, seed), hashes)
                and all(_current(run.holdout_model_file(c), [h]) for c, h in members)):
            stale.append((arch, seed, members))
    if not stale:
        return []
    held = run.load_holdout()
    if len(held.ids) == 0:
        return []
    mean, std = normalisation(run.load_data().images)  # the development set's, as in training
    images = torch.from_numpy(np.ascontiguousarray(held.images, dtype=np.uint8)).unsqueeze(1).to(device)
    for arch, seed, members in stale:
        models = (load_model(run.cell_dir(cell), device) for cell, _ in members)
        total, head = ensemble_outputs(models, images, cfg.protocol.input, mean, std, arithmetic, tta=True,
                                       each=partial(_write_model, run, held.ids, members))
        _write(run.holdout_probs_file(arch, seed), held.ids, total, [h for _, h in members], head)
        if progress:
            print(f"holdout: {arch} seed {seed}: {len(members)} fold models and their ensemble on "
                  f"{len(held.ids)} images")
    return [(a, s) for a, s, _ in stale]
