"""The locked holdout, predicted once at the end of a run: each architecture's fold ensemble per seed.

Nothing before this step reads ``holdout.npz``: training, validation, threshold and post-processing
choices, tuning. Here every finished (architecture, seed) with all its folds done averages its fold
models' flip-TTA probabilities on the holdout images and stores them as uint8 levels (and, with
``protocol.empty_head``, the mean of the fold models' flip-TTA head probabilities, as float32); the threshold and
post-processing applied to them are chosen on that architecture's pooled out-of-fold predictions
(``bench.results``). A prediction is redone only when the cells behind it changed (their cell hashes).
"""
from __future__ import annotations

import numpy as np
import torch

from bench import atomic
from bench.config import Config
from bench.inference import predict_outputs, quantise
from bench.rundir import Cell, RunDir
from bench.train import DeviceData, load_model


def _complete_groups(run: RunDir, cfg: Config) -> dict[tuple[str, int], tuple[list[Cell], list[str]]]:
    """(arch, seed) -> its cells and their cell hashes, for the groups with every fold finished and ok."""
    groups: dict[tuple[str, int], list[tuple[Cell, dict]]] = {}
    for cell in run.done_cells():
        groups.setdefault((cell.arch, cell.seed), []).append((cell, run.cell_metrics(cell)))
    return {k: ([c for c, _ in v], [m["cell_hash"] for _, m in v]) for k, v in groups.items()
            if len(v) == cfg.protocol.folds and all(m["status"] == "ok" for _, m in v)}


def predict(run: RunDir, cfg: Config, device: torch.device, *, progress: bool = True) -> list[tuple[str, int]]:
    """Write ``holdout/<arch>-seed<s>.npz`` for every complete group that lacks a current one; returns them."""
    if not run.holdout_data_file.is_file():
        return []
    stale = []
    for (arch, seed), (cells, hashes) in sorted(_complete_groups(run, cfg).items()):
        path = run.holdout_probs_file(arch, seed)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if list(z["cell_hashes"]) == hashes:
                    continue
        stale.append((arch, seed, cells, hashes))
    if not stale:
        return []
    held = run.load_holdout()
    if len(held["ids"]) == 0:
        return []
    dev = run.load_data()  # the normalisation statistics of the development set, as in training
    stats = DeviceData.from_arrays(list(dev["ids"]), dev["images"], dev["masks"], torch.device("cpu"))
    images = torch.from_numpy(np.ascontiguousarray(held["images"], dtype=np.uint8)).unsqueeze(1).to(device)
    for arch, seed, cells, hashes in stale:
        total = torch.zeros(images.shape[0], *images.shape[-2:], device=device)
        head_total: torch.Tensor | None = None  # stays None for models without the head
        for cell in cells:
            model = load_model(run.cell_dir(cell), device)
            out = predict_outputs(model, images, cfg.protocol.input, stats.mean, stats.std, tta=True)
            total += out.masks
            if out.head is not None:
                head_total = out.head if head_total is None else head_total + out.head
        head = {} if head_total is None else {"head_probs": (head_total / len(cells)).cpu().numpy().astype(np.float32)}
        atomic.write_npz(run.holdout_probs_file(arch, seed), ids=held["ids"], probs=quantise(total / len(cells)),
                         cell_hashes=np.array(hashes), **head)
        if progress:
            print(f"holdout: {arch} seed {seed}, ensemble of {len(cells)} folds on {len(held['ids'])} images")
    return [(a, s) for a, s, _, _ in stale]
