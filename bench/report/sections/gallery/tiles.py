"""Prediction gallery tiles: the same validation images for every architecture, drawn with PIL at native
101x101 (the page scales them up with crisp pixels), so each tile is a few kilobytes."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from bench.metrics import binarise
from bench.report.plots import data_uri
from bench.rundir import Gallery

TRUTH = np.array([255, 210, 0], np.float32)  # salt in the truth tile
HIT = np.array([40, 200, 70], np.float32)  # predicted salt where there is salt
FALSE_POS = np.array([235, 50, 50], np.float32)  # predicted salt where there is none
MISSED = np.array([40, 120, 255], np.float32)  # salt the prediction missed
LEGEND = [("correct salt", HIT), ("false salt", FALSE_POS), ("missed salt", MISSED)]
_ALPHA = 0.55


def _uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return data_uri(buf.getvalue())


def _overlay(image: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    rgb = np.repeat(image[..., None].astype(np.float32), 3, axis=-1)
    for mask, colour in layers:
        rgb[mask] = (1 - _ALPHA) * rgb[mask] + _ALPHA * colour
    return rgb


def css_colour(colour: np.ndarray) -> str:
    return "rgb({}, {}, {})".format(*(int(c) for c in colour))


def gallery_rows(gallery: Gallery, board: pd.DataFrame, per_image: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per gallery image: its id and why it was chosen, the image, the truth, one tile per architecture
    (thresholded at that architecture's OOF threshold) with the per-image TGS score."""
    # the gallery shows each architecture's lowest seed; its threshold is the first of the per-seed thresholds
    thresholds = {a: float(str(t).split()[0]) for a, t in zip(board["arch"], board["threshold"])}
    order = [a for a in board["arch"] if a in gallery.probs]
    seed0 = per_image[per_image["seed"] == per_image["seed"].min()]
    scores = seed0.set_index(["arch", "id"])["score"]
    rows = []
    for k, image_id in enumerate(gallery.ids):
        image, truth = gallery.images[k], gallery.masks[k].astype(bool)
        tiles = [{"title": "image", "src": _uri(_overlay(image, [])), "caption": ""},
                 {"title": "truth", "src": _uri(_overlay(image, [(truth, TRUTH)])), "caption": f"{truth.mean():.0%} salt"}]
        for arch in order:
            pred = binarise(gallery.probs[arch][k], thresholds[arch])
            layers = [(pred & truth, HIT), (pred & ~truth, FALSE_POS), (~pred & truth, MISSED)]
            score = scores.get((arch, str(image_id)))
            tiles.append({"title": arch, "src": _uri(_overlay(image, layers)),
                          "caption": "n/a" if score is None else f"{score:.2f}"})
        rows.append({"id": str(image_id), "label": str(gallery.labels[k]), "tiles": tiles})
    return rows
