"""Kaggle TGS run-length encoding, exactly as in the competition files.

Pixels are numbered column-major (top to bottom, then left to right), starting at 1; the string is
``start length`` pairs separated by single spaces, ascending and non-overlapping; an empty mask is
the empty string. Encoding is canonical (maximal runs), so decode -> encode reproduces every real
``train.csv`` row byte for byte. Decoding is strict because a silently mis-read mask would corrupt
every score downstream: the ``ValueError`` says which rule the string breaks.
"""
from __future__ import annotations

import re

import numpy as np

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_MAX_TOKEN_DIGITS = 18  # anything longer cannot be a pixel index and would overflow int64


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = salt) as the canonical Kaggle RLE string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    flat = np.zeros(mask.size + 2, dtype=np.int8)
    flat[1:-1] = mask.ravel(order="F") != 0
    edges = np.flatnonzero(np.diff(flat))  # alternating run starts and ends (0-based, end exclusive)
    if edges.size == 0:
        return ""
    runs = edges.reshape(-1, 2)
    runs[:, 1] -= runs[:, 0]
    runs[:, 0] += 1
    return " ".join(map(str, runs.ravel().tolist()))


def rle_decode(rle: str, shape: tuple[int, int] = (101, 101)) -> np.ndarray:
    """Decode a Kaggle RLE string into a bool mask of ``shape``; raise ValueError naming the defect.

    Touching runs (one starting right after the previous ends) are accepted: they describe a valid
    mask, although the encoder would have merged them.
    """
    height, width = shape
    n_pixels = height * width
    tokens = rle.split()
    if not tokens:
        return np.zeros(shape, dtype=bool)
    if len(tokens) % 2:
        raise ValueError(f"odd token count in RLE: {len(tokens)} tokens, expected start/length pairs")
    for i, token in enumerate(tokens):
        if not _INTEGER.fullmatch(token):
            raise ValueError(f"non-integer token {token!r} at position {i + 1} in RLE")
        if len(token.lstrip("+-")) > _MAX_TOKEN_DIGITS:
            raise ValueError(f"out-of-range run in RLE: token {token!r} exceeds {n_pixels} pixels")
    pairs = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    starts, lengths = pairs[:, 0], pairs[:, 1]

    bad = np.flatnonzero((starts < 1) | (lengths < 1))
    if bad.size:
        i = bad[0]
        raise ValueError(f"non-positive run in RLE: run {i + 1} is start {starts[i]} length {lengths[i]}")
    ends = starts + lengths - 1  # 1-based, inclusive
    bad = np.flatnonzero(ends > n_pixels)
    if bad.size:
        i = bad[0]
        raise ValueError(
            f"out-of-range run in RLE: run {i + 1} (start {starts[i]} length {lengths[i]}) "
            f"ends at pixel {ends[i]} > {n_pixels} for shape {height}x{width}"
        )
    bad = np.flatnonzero(starts[1:] < starts[:-1])
    if bad.size:
        i = bad[0] + 1
        raise ValueError(f"unsorted runs in RLE: run {i + 1} starts at {starts[i]}, before run {i} at {starts[i - 1]}")
    bad = np.flatnonzero(starts[1:] <= ends[:-1])
    if bad.size:
        i = bad[0] + 1
        raise ValueError(
            f"overlapping runs in RLE: run {i + 1} starts at {starts[i]} but run {i} ends at {ends[i - 1]}"
        )

    change = np.zeros(n_pixels + 1, dtype=np.int8)
    change[starts - 1] += 1
    change[ends] -= 1
    flat = np.cumsum(change[:-1], dtype=np.int8).astype(bool)
    return np.ascontiguousarray(flat.reshape(width, height).T)
