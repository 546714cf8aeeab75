"""Seismic salt generator: the embedded default dataset, so the benchmark runs without Kaggle.

Images are built the way seismic sections are: a random reflectivity series convolved with a
Ricker wavelet, laterally warped (dips, folds, faults) into layered reflectors; salt bodies cut
through them with a weak chaotic interior and a strong boundary reflection, and the sediments
are dragged along their flanks. Label statistics are calibrated on the real TGS train set: each
image draws its coverage class from the real histogram and the body is the top-k pixels of a
smooth shape field, so the coverage lands exactly where it was aimed.

Every image has its own RNG derived from (seed, split, index), so any subset of a dataset is
bit-identical to the same images of a larger one.

Styles change what the images look like, never the labels: ``hard`` draws every mask and depth from the
same stream as ``default`` and repaints the image from a second stream with another texture model
(phase-rotated, laterally filtered noise instead of blocky Ricker reflectors), a weaker and smeared salt
signature, more salt-like distractors, stronger noise and blur. A model fitted to one texture model is
checked on the other with the very same label statistics.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from bench import atomic
from bench.data import tgs

SIZE = 101
#: Image styles: the same labels for a seed, different pictures.
STYLES = ("default", "hard")
#: Real TGS train set: images per coverage class ceil(10 * coverage), classes 0..10.
REAL_CLASS_COUNTS = (1562, 576, 296, 224, 186, 225, 205, 174, 148, 159, 245)
#: Real train images that are a constant grey (all with empty masks), out of 4000.
REAL_CONSTANT_GREY = 80
#: Real non-empty train masks whose every column is all salt or all empty.
REAL_VERTICAL = 113

_TRAIN, _TEST = 0, 1
_CLASS_P = np.asarray(REAL_CLASS_COUNTS, float) / sum(REAL_CLASS_COUNTS)
_GREY_GIVEN_EMPTY = REAL_CONSTANT_GREY / REAL_CLASS_COUNTS[0]
_VERTICAL_GIVEN_SALT = REAL_VERTICAL / (sum(REAL_CLASS_COUNTS) - REAL_CLASS_COUNTS[0])
_AXIS = np.linspace(0.0, 1.0, SIZE)
_Z, _X = np.meshgrid(_AXIS, _AXIS, indexing="ij")  # rows are depth, columns are lateral position


@dataclass
class SyntheticSet:
    """A generated dataset in memory; the test masks are the hidden labels a submission is scored on."""

    ids: list[str]
    images: np.ndarray
    masks: np.ndarray
    depths: dict[str, int]
    test_ids: list[str]
    test_images: np.ndarray
    test_masks: np.ndarray = field(repr=False)


def generate(n_train: int, n_test: int, seed: int = 0, style: str = "default") -> SyntheticSet:
    """Generate train and test images, masks and depths; image i of a split depends only on (seed, split, i, style),
    and its mask and depth only on (seed, split, i)."""
    if n_train < 0 or n_test < 0:
        raise ValueError(f"image counts must be non-negative, got n_train={n_train}, n_test={n_test}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r} (valid: {', '.join(STYLES)})")
    ids = make_ids(seed, _TRAIN, n_train)
    test_ids = make_ids(seed, _TEST, n_test)
    images, masks, z = _render_split(seed, _TRAIN, n_train, style)
    test_images, test_masks, test_z = _render_split(seed, _TEST, n_test, style)
    depths = dict(zip(ids + test_ids, (int(v) for v in np.concatenate([z, test_z]))))
    return SyntheticSet(ids, images, masks, depths, test_ids, test_images, test_masks)


def write_dataset(root: str | Path, n_train: int = 4000, n_test: int = 18000, seed: int = 0,
                  style: str = "default") -> Path:
    """Write a synthetic dataset in the Kaggle layout, plus the hidden test labels in ``synthetic_test_masks.npz``.

    The side file lets tests score a submission; it is written after the folder because ``tgs.write``
    only creates a folder that does not exist yet (or is empty).
    """
    root = Path(root)
    data = generate(n_train, n_test, seed, style)
    tgs.write(root, data.ids, data.images, data.masks, depths=data.depths,
              test_ids=data.test_ids, test_images=data.test_images)
    atomic.write_npz(root / "synthetic_test_masks.npz", ids=np.asarray(data.test_ids), masks=data.test_masks)
    return root


def train_ids(seed: int, n: int) -> list[str]:
    """The ids of the first ``n`` train images of generator ``seed`` (image i's id depends on i only)."""
    return make_ids(seed, _TRAIN, n)


def make_ids(seed: int, split: int, n: int) -> list[str]:
    """Kaggle-like 10-hex-char ids: a keyed 40-bit permutation of (split, index), hence unique by construction."""
    key = hashlib.blake2b(f"salt-bench:{seed}".encode(), digest_size=16).digest()
    return [f"{_feistel40(key, (split << 39) | i):010x}" for i in range(n)]


def _feistel40(key: bytes, x: int) -> int:
    """Four Feistel rounds on two 20-bit halves: a bijection on 40 bits that looks random."""
    left, right = x >> 20, x & 0xFFFFF
    for r in range(4):
        h = hashlib.blake2b(bytes([r]) + right.to_bytes(3, "little"), key=key, digest_size=3).digest()
        left, right = right, left ^ (int.from_bytes(h, "little") & 0xFFFFF)
    return (left << 20) | right


def _render_split(seed: int, split: int, n: int, style: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.empty((n, SIZE, SIZE), np.uint8)
    masks = np.empty((n, SIZE, SIZE), bool)
    depths = np.empty(n, np.int64)
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, i)))
        scene = _render(rng)
        if style == "hard" and scene.dist is not None:
            paint = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, i, 1)))
            images[i] = _render_hard(paint, scene)
        else:  # constant grey images stay grey in every style, as in the real data
            images[i] = scene.image
        masks[i], depths[i] = scene.mask, scene.depth
    return images, masks, depths


# --- smooth random fields -------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _basis(g: int) -> np.ndarray:
    """(SIZE, g) Gaussian radial basis: B @ N @ B.T (N white) is a smooth field, g bumps a side, unit variance.

    The scale is exact in expectation (variance about the image's own mean), so no per-field std() is needed.
    """
    centres = np.linspace(-0.15, 1.15, g)
    width = 1.3 / (g - 1)
    b = np.exp(-0.5 * ((_AXIS[:, None] - centres[None, :]) / width) ** 2)
    row, mean = (b**2).sum(1).mean(), b.mean(0) @ b.mean(0)
    return b / np.sqrt(np.sqrt(row**2 - mean**2))


def _smooth2d(rng: np.random.Generator, g: int) -> np.ndarray:
    b = _basis(g)
    return b @ rng.standard_normal((g, g)) @ b.T


def _smooth1d(rng: np.random.Generator, g: int) -> np.ndarray:
    return _basis1d(g) @ rng.standard_normal(g)


@lru_cache(maxsize=None)
def _basis1d(g: int) -> np.ndarray:
    """The 1-D counterpart of :func:`_basis`: B @ n is a smooth curve with unit variance about its mean."""
    b = _basis(g)
    return b / np.sqrt((b**2).sum(1).mean() - b.mean(0) @ b.mean(0))


def _ricker(t: np.ndarray, wavelength: float) -> np.ndarray:
    a = (np.pi * t / wavelength) ** 2
    return (1.0 - 2.0 * a) * np.exp(-a)


# --- one image --------------------------------------------------------------------------------------

class _Scene(NamedTuple):
    """One default-style image with what another style needs to repaint it over the same label."""

    image: np.ndarray
    mask: np.ndarray
    depth: int
    dist: np.ndarray | None  # signed distance to the salt boundary (px, >0 in salt); -inf without salt; None if grey
    wavelength: float


def _render(rng: np.random.Generator) -> _Scene:
    """One image: its coverage class is drawn from the real histogram first, then the picture is built to fit it."""
    cls = int(rng.choice(11, p=_CLASS_P))
    if cls == 0 and rng.random() < _GREY_GIVEN_EMPTY:
        grey = np.full((SIZE, SIZE), int(rng.integers(95, 160)), np.uint8)
        return _Scene(grey, np.zeros((SIZE, SIZE), bool), _depth(rng, False), None, 0.0)
    wavelength = float(np.exp(rng.uniform(np.log(3.5), np.log(16.0))))
    if cls == 0:
        sed = _sediments(rng, wavelength, None)
        img = _distractor(rng, sed, wavelength) if rng.random() < 0.35 else sed
        mask, dist = np.zeros((SIZE, SIZE), bool), np.full((SIZE, SIZE), -np.inf)
    else:
        mask, dist = _salt_body(rng, _target_coverage(rng, cls))
        img = _add_salt(rng, _sediments(rng, wavelength, dist), mask, dist, wavelength)
    return _Scene(_finish(rng, img), mask, _depth(rng, cls > 0), dist, wavelength)


def _depth(rng: np.random.Generator, salt: bool) -> int:
    """Depth in 50..959, shifted up a little when there is salt (real TGS: r ~ 0.12 with salt presence)."""
    return int(np.clip(round(rng.normal(480.0 + 50.0 * salt, 200.0)), 50, 959))


def _target_coverage(rng: np.random.Generator, cls: int) -> int:
    """Pixel count for a coverage class; class 1 is skewed small like the real masks (median ~2.6%)."""
    lo, hi = (cls - 1) / 10, cls / 10
    frac = 0.1 * rng.random() ** 2 if cls == 1 else rng.uniform(lo, hi)
    k = int(round(frac * SIZE * SIZE))
    return int(np.clip(k, int(np.floor(lo * SIZE * SIZE)) + 1, min(int(hi * SIZE * SIZE), SIZE * SIZE - 1)))


def _sediments(rng: np.random.Generator, wavelength: float, salt_dist: np.ndarray | None) -> np.ndarray:
    """Layered reflectors: a blocky reflectivity series convolved with a Ricker wavelet, sampled along warped depths."""
    dip = np.tan(np.radians(rng.normal(0.0, 16.0))) * (SIZE - 1)
    u = _Z * (SIZE - 1) * np.exp(0.15 * rng.standard_normal() * _smooth2d(rng, 3)) + dip * _X
    if rng.random() < 0.6:
        period = rng.uniform(0.6, 3.0)
        u += rng.uniform(2, 14) * np.sin(2 * np.pi * (_X / period + rng.random())) * (1 + 0.5 * _Z * rng.standard_normal())
    u += rng.uniform(0.5, 6.0) * _smooth2d(rng, int(rng.integers(3, 7)))
    u += rng.uniform(0.0, 0.6) * wavelength / 6 * _smooth2d(rng, 14)  # small wiggles: reflectors are not perfect lines
    for _ in range(rng.poisson(0.3)):
        u += _fault(rng)
    if salt_dist is not None:
        # sampling deeper near the salt shows the layers pulled up against its flank (down, less often)
        drag = rng.uniform(3, 18) * rng.choice((-1.0, 1.0), p=(0.8, 0.2))
        u += drag * np.exp(np.minimum(salt_dist, 0.0) / rng.uniform(6, 20))
    u -= u.min() - 2 * wavelength
    img = _reflectors(rng, int(u.max() + 2 * wavelength) + 2, wavelength, u)
    return img * np.exp(0.3 * _smooth2d(rng, int(rng.integers(4, 12))))


def _reflectors(rng: np.random.Generator, n: int, wavelength: float, u: np.ndarray) -> np.ndarray:
    """Blocky reflectivity that drifts laterally (reflectors fade, split, pinch out), convolved and sampled at (u, x)."""
    nodes = int(rng.integers(5, 16))
    thickness = wavelength * rng.uniform(0.25, 0.9)
    pos = np.cumsum(rng.exponential(thickness, size=int(n / thickness * 1.5) + 8))
    pos = pos[pos < n - 1]
    band = np.exp(0.4 * np.interp(pos, np.linspace(0, n, 9), rng.standard_normal(9)))
    amp = rng.laplace(size=pos.size) * band
    lateral = 1.0 + rng.uniform(0.2, 0.7) * rng.standard_normal((pos.size, nodes))
    rows = np.repeat(pos.astype(int) * nodes, nodes) + np.tile(np.arange(nodes), pos.size)
    r = np.bincount(rows, weights=(amp[:, None] * lateral).ravel(), minlength=n * nodes).reshape(n, nodes)
    r += rng.uniform(0.1, 0.5) * rng.laplace(size=(n, nodes)) * (rng.random((n, nodes)) < 0.3)
    half = int(1.5 * wavelength) + 1
    table = ndimage.convolve1d(r, _ricker(np.arange(-half, half + 1, dtype=float), wavelength), axis=0, mode="constant")
    i = np.clip(u.astype(int), 0, n - 2)
    wu = u - i
    j, wx = _lateral_nodes(nodes)
    flat, k = table.ravel(), i * nodes + j
    top = flat.take(k) + (flat.take(k + 1) - flat.take(k)) * wx
    bottom = flat.take(k + nodes) + (flat.take(k + nodes + 1) - flat.take(k + nodes)) * wx
    return top + (bottom - top) * wu


@lru_cache(maxsize=None)
def _lateral_nodes(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Left node index and interpolation weight of every pixel for a lateral grid of ``nodes`` points."""
    xj = _X * (nodes - 1)
    j = np.minimum(xj.astype(int), nodes - 2)
    return j, xj - j


def _fault(rng: np.random.Generator) -> np.ndarray:
    """Depth offset on one side of a steep line: a normal fault's throw."""
    angle = np.radians(rng.uniform(50, 85)) * rng.choice((-1, 1))
    side = (_X - rng.uniform(0.15, 0.85)) * np.sin(angle) + (_Z - 0.5) * np.cos(angle)
    width = rng.uniform(0.7, 3.0)
    return rng.uniform(2, 12) * rng.choice((-1, 1)) * np.clip(side * (SIZE - 1) / width + 0.5, 0.0, 1.0)


# --- salt -----------------------------------------------------------------------------------------

def _salt_body(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly k salt pixels: the top-k of a smooth shape field; also returns the signed distance (px, >0 in salt)."""
    if rng.random() < _VERTICAL_GIVEN_SALT:
        return _vertical_body(rng, k)
    kinds = ("dome", "base", "flank", "border", "sliver")
    p = (0.33, 0.14, 0.27, 0.18, 0.08) if k < 0.1 * SIZE * SIZE else (0.36, 0.15, 0.30, 0.19, 0.0)
    kind = kinds[int(rng.choice(len(kinds), p=p))]
    if kind in ("dome", "base"):
        x0 = rng.uniform(-0.3, 1.3)
        top = rng.normal(0, 1.2) * (_AXIS - x0) ** 2 + rng.normal(0, 0.4) * _AXIS + _wobble(rng)
        f = _Z - top[None, :] if kind == "dome" else top[None, :] - _Z
    elif kind == "flank":
        zc = _AXIS - rng.uniform(0, 1)
        xb = rng.normal(0, 0.5) * zc + rng.normal(0, 0.6) * zc**2 + _wobble(rng)
        f = rng.choice((-1.0, 1.0)) * (_X - xb[:, None])
    elif kind == "border":
        cx, cz = _border_point(rng)
        ax, az = np.exp(rng.normal(0, 0.4, size=2))
        rough = rng.uniform(0.04, 0.15) * min(1.0, np.sqrt(k / 2000))  # small bodies: noise must not pull them inside
        f = -np.sqrt(ax * (_X - cx) ** 2 + az * (_Z - cz) ** 2) + rough * _smooth2d(rng, 4)
    else:
        curve = rng.uniform(0, 1) + rng.normal(0, 0.5) * (_AXIS - 0.5) + 0.5 * _wobble(rng)
        f = -np.abs(_Z - curve[None, :])
        if rng.random() < 0.5:
            f = f.T
    f = f + rng.uniform(0.01, 0.06) * _smooth2d(rng, int(rng.integers(5, 9)))
    if rng.random() < 0.3:  # rugose top, as where salt was picked on a noisy reflection
        f = f + rng.uniform(0.005, 0.02) * _smooth2d(rng, 25)
    return _top_k(f, k)


def _wobble(rng: np.random.Generator) -> np.ndarray:
    """Irregular boundary: a broad bend plus shorter kinks, so bodies are not textbook parabolas."""
    return rng.uniform(0.02, 0.1) * _smooth1d(rng, 4) + rng.uniform(0.0, 0.03) * _smooth1d(rng, 12)


def _border_point(rng: np.random.Generator) -> tuple[float, float]:
    along, out = rng.uniform(0, 1), rng.uniform(-0.05, 0.3)  # out: distance outside the border
    side = int(rng.integers(4))
    return [(along, -out), (along, 1 + out), (-out, along), (1 + out, along)][side]


def _vertical_body(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every column all salt or all empty; sometimes salt on both sides of a sediment window."""
    cols = int(np.clip(round(k / SIZE), 1, SIZE - 1))
    f = rng.choice((-1.0, 1.0)) * (_AXIS - 0.5) if rng.random() < 0.8 else np.abs(_AXIS - rng.uniform(0.3, 0.7))
    f = f + 1e-6 * np.arange(SIZE)  # break ties deterministically
    mask_cols, dist_cols = _top_k(f[None, :], cols)
    return np.repeat(mask_cols, SIZE, 0), np.repeat(dist_cols, SIZE, 0)


def _top_k(f: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = f.ravel()
    order = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    mask = np.zeros(flat.size, bool)
    mask[order] = True
    inside, outside = flat[mask].min(), flat[~mask].max() if k < flat.size else -np.inf
    level = 0.5 * (inside + outside)
    gz, gx = np.gradient(f) if f.shape[0] > 1 else (np.zeros_like(f), np.gradient(f, axis=1))
    dist = (f - level) / np.maximum(np.hypot(gz, gx), 1e-4)
    return mask.reshape(f.shape), dist


def _add_salt(rng: np.random.Generator, sed: np.ndarray, mask: np.ndarray, dist: np.ndarray, wavelength: float) -> np.ndarray:
    """Salt: a weak, vertically streaky chaotic interior, and a strong reflection along its boundary."""
    texture = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), (rng.uniform(2, 10), rng.uniform(1.5, 5)))
    texture *= rng.uniform(0.05, 0.3) * sed.std() / (texture.std() + 1e-9)
    inside = 1.0 / (1.0 + np.exp(-np.clip(dist, -30, 30) / 0.6))
    strength = rng.uniform(1.5, 4.0) * sed.std() * np.clip(1 + 0.4 * _smooth2d(rng, 4), 0.2, None)
    edge = _ricker(dist, wavelength * rng.uniform(0.6, 1.2))
    return sed * (1 - inside) + texture * inside + strength * rng.choice((1, -1), p=(0.85, 0.15)) * edge


def _distractor(rng: np.random.Generator, sed: np.ndarray, wavelength: float) -> np.ndarray:
    """Salt-like textures without salt: a chaotic patch, a lone strong reflector, or vertical streaks over faint layers."""
    kind = int(rng.integers(3))
    if kind == 0:
        f = _smooth2d(rng, 4)
        w = 1.0 / (1.0 + np.exp(-(f - np.quantile(f, rng.uniform(0.3, 0.9))) * 6))
        chaos = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), rng.uniform(1, 4))
        return sed * (1 - w) + chaos * (rng.uniform(0.3, 1.0) * sed.std() / chaos.std()) * w
    if kind == 1:
        f = _Z + rng.normal(0, 0.5) * (_X - 0.5) + 0.1 * _smooth2d(rng, 4)
        _, dist = _top_k(f, int(rng.integers(1000, 9000)))
        return sed + rng.uniform(1.0, 2.5) * sed.std() * _ricker(dist, wavelength) * (1 + 0.3 * _smooth2d(rng, 4))
    streaks = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), (rng.uniform(4, 10), rng.uniform(0.8, 2.0)))
    return rng.uniform(0.1, 0.5) * sed + streaks * (sed.std() / streaks.std())


# --- acquisition ------------------------------------------------------------------------------------

def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Per-image blur, noise and gain, then 8-bit grey around mid level like the real sections."""
    if rng.random() < 0.2:
        img = ndimage.gaussian_filter(img, rng.uniform(1.0, 3.0, size=2))
    elif rng.random() < 0.6:
        img = ndimage.gaussian_filter(img, rng.uniform(0.3, 0.9))
    img = img / (img.std() + 1e-9)
    noise = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), (rng.uniform(0.4, 0.9), rng.uniform(0.6, 2.5)))
    img = img + rng.uniform(0.05, 0.5) * noise / noise.std()  # laterally elongated grain, like migrated noise
    img = img * np.exp(0.2 * _smooth2d(rng, 3))
    out = rng.normal(122, 14) + rng.uniform(14, 36) * img / (img.std() + 1e-9)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- the hard style: another texture model over the same labels ---------------------------------------

def _render_hard(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """Repaint a scene: new sediments, a faint and smeared salt signature, more distractors, a noisier acquisition."""
    wavelength = float(np.clip(scene.wavelength * np.exp(rng.normal(0.0, 0.25)), 3.0, 18.0))
    salt = bool(scene.mask.any())
    dist = np.maximum(scene.dist, -60.0)  # finite everywhere: far from any salt
    img = _hard_sediments(rng, wavelength, dist if salt else None)
    if salt:
        img = _hard_salt(rng, img, dist, wavelength)
    if rng.random() < (0.3 if salt else 0.6):
        img = _hard_distractor(rng, img, dist, wavelength)
    return _hard_finish(rng, img)


def _hard_sediments(rng: np.random.Generator, wavelength: float, salt_dist: np.ndarray | None) -> np.ndarray:
    """Laterally filtered noise, band-passed in depth by a phase-rotated Gaussian wavelet, sampled along warped depths."""
    dip = np.tan(np.radians(rng.normal(0.0, 20.0))) * (SIZE - 1)
    u = _Z * (SIZE - 1) + dip * _X + rng.uniform(1.0, 10.0) * _smooth2d(rng, int(rng.integers(3, 6)))
    u += rng.uniform(0.0, 0.4) * wavelength * _smooth2d(rng, 10)
    if salt_dist is not None:  # layers bend against the salt, up or down
        u += rng.uniform(-15, 15) * np.exp(np.minimum(salt_dist, 0.0) / rng.uniform(5, 25))
    u -= u.min() - 2 * wavelength
    n = int(u.max() + 2 * wavelength) + 2
    # the table's columns are k px apart (k ~ a third of the lateral correlation length): same texture, less filtering
    lateral = rng.uniform(4.0, 30.0)
    k = max(1.0, lateral / 3)
    cols = int((SIZE + 40) / k) + 2
    band = np.exp(0.5 * _smooth1d(rng, 6))[np.linspace(0, SIZE - 1, n).astype(int)]
    r = ndimage.gaussian_filter1d(rng.laplace(size=(n, cols)), lateral / k, axis=1, mode="reflect") * band[:, None]
    sigma = wavelength / (2 * np.pi) * 1.4
    phase = rng.uniform(0, np.pi)
    table = (np.cos(phase) * ndimage.gaussian_filter1d(r, sigma, axis=0, order=2) * sigma
             + np.sin(phase) * ndimage.gaussian_filter1d(r, sigma, axis=0, order=1))
    fine = ndimage.gaussian_filter1d(rng.standard_normal((n, cols)), rng.uniform(0.7, 2.5), axis=1)
    fine = ndimage.gaussian_filter1d(fine, 0.8, axis=0, order=1)  # thin laminations between the main reflectors
    table += rng.uniform(0.0, 0.5) * table.std() / (fine.std() + 1e-9) * fine
    zz, xx = np.ogrid[:n, :cols]
    for _ in range(rng.poisson(1.0)):  # bright spots: short, strong lenses along one reflector
        zc, xc = rng.uniform(0, n), rng.uniform(20, SIZE + 20) / k
        table *= 1 + rng.uniform(2, 6) * np.exp(-((zz - zc) / rng.uniform(1, 3)) ** 2 - ((xx - xc) * k / rng.uniform(3, 12)) ** 2)
    img = ndimage.map_coordinates(table, [u, (_X * (SIZE - 1) + 20) / k], order=1, mode="nearest")
    return img * np.exp(0.4 * _smooth2d(rng, int(rng.integers(3, 9))))


def _hard_salt(rng: np.random.Generator, sed: np.ndarray, dist: np.ndarray, wavelength: float) -> np.ndarray:
    """Salt the eye finds late: an interior keeping ghosts of layers, a jittered soft boundary, a faint or absent edge."""
    jitter = dist + rng.uniform(0.5, 2.5) * _smooth2d(rng, 10)
    inside = 1.0 / (1.0 + np.exp(-np.clip(jitter / rng.uniform(1.5, 5.0), -30, 30)))
    blobs = _smooth2d(rng, int(rng.integers(6, 25)))
    interior = rng.uniform(0.05, 0.25) * sed + rng.uniform(0.1, 0.45) * sed.std() * blobs / (blobs.std() + 1e-9)
    strength = rng.uniform(0.0, 1.5) * sed.std() * (rng.random() < 0.7) * np.clip(1 + 0.6 * _smooth2d(rng, 4), 0.0, None)
    edge = _ricker(jitter, wavelength * rng.uniform(0.6, 1.5)) * rng.choice((1, -1))
    return sed * (1 - inside) + interior * inside + strength * edge


def _hard_distractor(rng: np.random.Generator, img: np.ndarray, dist: np.ndarray, wavelength: float) -> np.ndarray:
    """Salt-like patches away from any salt: a quiet zone, a lone strong reflector, or a vertically streaky chimney."""
    away = 1.0 / (1.0 + np.exp(np.clip((dist + 8.0) / 2.0, -30, 30)))  # 0 in and near the salt
    kind = int(rng.integers(3))
    if kind == 0:
        f = _smooth2d(rng, 4)
        w = away / (1.0 + np.exp(-(f - np.quantile(f, rng.uniform(0.4, 0.9))) * rng.uniform(3, 10)))
        blobs = _smooth2d(rng, int(rng.integers(6, 25)))
        quiet = rng.uniform(0.1, 0.5) * img + rng.uniform(0.1, 0.45) * img.std() * blobs / (blobs.std() + 1e-9)
        return img * (1 - w) + quiet * w
    if kind == 1:
        f = _Z + rng.normal(0, 0.5) * (_X - 0.5) + 0.1 * _smooth2d(rng, 4)
        _, d = _top_k(f, int(rng.integers(1000, 9000)))
        return img + rng.uniform(1.5, 3.0) * img.std() * _ricker(d, wavelength) * away
    x0, width = rng.uniform(0, 1), rng.uniform(0.08, 0.3)
    w = away * np.exp(-(((_X - x0) + 0.2 * _smooth2d(rng, 4)) / width) ** 2)
    streaks = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), (rng.uniform(4, 12), rng.uniform(0.8, 2.0)))
    return img * (1 - w) + (0.3 * img + streaks * img.std() / streaks.std()) * w


def _hard_finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Blur more often and stronger, two kinds of noise, then the same 8-bit grey levels as the default style.

    The grain follows the local amplitude, as migration noise does, so quiet salt stays smooth rather than grainy.
    """
    if rng.random() < 0.4:
        img = ndimage.gaussian_filter(img, rng.uniform(1.0, 3.0, size=2))
    else:
        img = ndimage.gaussian_filter(img, rng.uniform(0.4, 1.2))
    img = img / (img.std() + 1e-9)
    envelope = 0.3 + 0.7 * np.sqrt(ndimage.uniform_filter(img**2, 9))
    grain = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), (rng.uniform(0.4, 1.0), rng.uniform(0.6, 3.0)))
    swell = _smooth2d(rng, int(rng.integers(25, 50)))
    img = img + rng.uniform(0.15, 0.6) * envelope * grain / grain.std() + rng.uniform(0.0, 0.4) * swell / swell.std()
    img = img * np.exp(0.3 * _smooth2d(rng, 3))
    out = rng.normal(122, 14) + rng.uniform(14, 36) * img / (img.std() + 1e-9)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
