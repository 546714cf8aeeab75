"""Contact sheet: 16 synthetic images beside the 9 real TGS samples, mask outlines in red, to judge realism by eye.

Usage: python benchmarks/contact_sheet.py [OUT.png] [--seed N] [--style default|hard] [--real DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from bench.data.synthetic import STYLES, generate

SCALE = 3
PAD = 4
REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "tgs-real"


def tile(image: np.ndarray, mask: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Upscaled RGB tile of a grey image with the mask boundary drawn in red."""
    rgb = np.repeat(np.kron(image, np.ones((scale, scale), np.uint8))[..., None], 3, axis=2)
    big = np.kron(mask.astype(np.uint8), np.ones((scale, scale), np.uint8)).astype(bool)
    rgb[big & ~ndimage.binary_erosion(big, border_value=0)] = (255, 0, 0)
    return rgb


def read_real(real_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The real sample images and masks; masks may be 8-bit or 16-bit, any nonzero value is salt."""
    out = []
    for path in sorted((real_dir / "sample" / "images").glob("*.png")):
        image = np.asarray(Image.open(path).convert("L"))
        mask = np.asarray(Image.open(real_dir / "sample" / "masks" / path.name)) > 0
        out.append((path.stem, image, mask))
    return out


def grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    h, w, _ = tiles[0].shape
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (h + PAD) + PAD, cols * (w + PAD) + PAD, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[PAD + r * (h + PAD):PAD + r * (h + PAD) + h, PAD + c * (w + PAD):PAD + c * (w + PAD) + w] = t
    return sheet


def contact_sheet(out: Path, seed: int = 0, real_dir: Path = REAL_DIR, style: str = "default") -> Path:
    """Synthetic 4x4 grid on the left, real 3x3 grid on the right, one labelled PNG."""
    data = generate(16, 0, seed, style)
    synth = grid([tile(im, m) for im, m in zip(data.images, data.masks)], 4)
    real = read_real(real_dir)
    real_sheet = grid([tile(im, m) for _, im, m in real], 3) if real else np.full((10, 10, 3), 255, np.uint8)
    header = 18
    height = max(synth.shape[0], real_sheet.shape[0]) + header
    sheet = np.full((height, synth.shape[1] + 20 + real_sheet.shape[1], 3), 255, np.uint8)
    sheet[header:header + synth.shape[0], :synth.shape[1]] = synth
    sheet[header:header + real_sheet.shape[0], synth.shape[1] + 20:] = real_sheet
    img = Image.fromarray(sheet)
    draw = ImageDraw.Draw(img)
    draw.text((PAD, 3), f"synthetic (seed {seed}, style {style})", fill=(0, 0, 0))
    label = "real TGS samples" if real else f"real samples not found in {real_dir}"
    draw.text((synth.shape[1] + 20 + PAD, 3), label, fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("/tmp/contact_sheet.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", choices=STYLES, default="default")
    parser.add_argument("--real", type=Path, default=REAL_DIR)
    args = parser.parse_args()
    print(contact_sheet(args.out, args.seed, args.real, args.style))


if __name__ == "__main__":
    main()
