"""The PNG formats of the Kaggle TGS layout: what the real files hold, read strictly and written exactly.

Images are 101x101 8-bit, stored as RGB with three equal channels (grayscale, and opaque grayscale+alpha,
are read too); masks are 16-bit grayscale 0/65535 when non-empty and 8-bit zeros when empty (any two values
{0, max} are read, palette masks by their index values).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import BenchError, one_line

SIZE = 101


def _open_png(path: Path) -> Image.Image:
    """Open a 101x101 PNG and decode it, or raise a one-line error naming the file.

    ``Image.open`` reads only the header, so format and size are checked before any pixel is decoded: a
    420 KB file can declare 12000x12000 pixels (1.2 GB decoded). Pillow's own decompression-bomb check
    runs inside ``Image.open``, before ours, on images over 89 M pixels: its error, and its warning
    (which ``bomb_warnings_as_errors`` turns into an error so that it is not printed), become the same
    one-line refusal.
    """
    if not path.is_file():
        raise BenchError(f"{path}: missing PNG")
    try:
        im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BenchError(f"{path}: wrong size, expected {SIZE}x{SIZE} ({one_line(exc)})") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise BenchError(f"{path}: corrupt PNG ({one_line(exc)})") from None
    with im:
        if im.format != "PNG":
            raise BenchError(f"{path}: not a PNG (format {im.format})")
        if im.size != (SIZE, SIZE):
            raise BenchError(f"{path}: wrong size {im.size[0]}x{im.size[1]}, expected {SIZE}x{SIZE}")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise BenchError(f"{path}: corrupt PNG ({one_line(exc)})") from None
        return im.copy()


@contextlib.contextmanager
def bomb_warnings_as_errors() -> Iterator[None]:
    """Make Pillow's ``DecompressionBombWarning`` an error while reading, so that ``_open_png`` refuses
    the file in one line instead of a warning being printed first. Enter it in the thread that starts
    the readers: the filter is process-wide and ``warnings.catch_warnings`` is not thread-safe."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _gray(path: Path, image: Image.Image) -> np.ndarray:
    """Single-channel array of a grayscale PNG, of an RGB PNG whose three channels are equal, or of a
    grayscale+alpha PNG that is opaque everywhere (PNG optimisers add an alpha channel that says nothing)."""
    if image.mode == "RGB":
        rgb = np.asarray(image)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise BenchError(f"{path}: RGB channels differ, expected a grayscale image (three equal channels)")
        return rgb[..., 0]
    if image.mode == "LA":
        gray, alpha = np.asarray(image).transpose(2, 0, 1)
        if (alpha != 255).any():
            raise BenchError(f"{path}: grayscale+alpha PNG with transparent pixels ({np.count_nonzero(alpha != 255)} "
                             f"of {alpha.size}), expected an opaque image (what a transparent pixel means is unknown)")
        return np.ascontiguousarray(gray)
    if image.mode in ("L", "1") or image.mode.startswith("I"):
        return np.asarray(image)
    raise BenchError(f"{path}: unsupported PNG mode {image.mode}, expected grayscale or RGB")


def read_image(path: Path) -> np.ndarray:
    """uint8 (101, 101) image."""
    pixels = _gray(path, _open_png(path))
    if pixels.dtype != np.uint8:
        raise BenchError(f"{path}: {pixels.dtype} pixels, expected an 8-bit image")
    return pixels


def read_mask(path: Path) -> np.ndarray:
    """bool (101, 101) mask from any PNG whose values are a subset of {0, max} (8- or 16-bit). A palette PNG
    (VOC-style tools and PNG optimisers write masks so) is read by its index values, not its colours: index 0
    is background whatever colour the palette gives it."""
    image = _open_png(path)
    pixels = np.asarray(image) if image.mode == "P" else _gray(path, image)
    top = pixels.max()
    if not np.all((pixels == 0) | (pixels == top)):
        values = np.unique(pixels)
        shown = ", ".join(map(str, values[:5].tolist())) + (", ..." if values.size > 5 else "")
        raise BenchError(f"{path}: mask has {values.size} distinct values ({shown}), expected 0 and one other value")
    return pixels != 0


def write_png(job: tuple[Path, np.ndarray, bool]) -> None:
    """Images: 8-bit RGB, three equal channels. Masks: 16-bit 0/65535, or 8-bit zeros when empty.

    zlib level 1 halves the time on noisy seismic images; the pixel format is what matters, not the level.
    """
    path, pixels, is_mask = job
    if not is_mask:
        image = Image.fromarray(np.repeat(pixels[..., None], 3, axis=2), "RGB")
    elif pixels.any():
        image = Image.fromarray(pixels.astype(np.uint16) * np.uint16(65535))
    else:
        image = Image.fromarray(np.zeros((SIZE, SIZE), np.uint8), "L")
    try:
        image.save(path, format="PNG", compress_level=1)
    except OSError as exc:
        if exc.filename is None:  # a failed write (disk full) does not say which file; the CLI prints it
            exc.filename = str(path)
        raise
