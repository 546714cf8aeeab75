"""Section "Gallery": the same validation images for every architecture (the winner's best, median and worst, then
where the architectures disagree most), each tile coloured by hit, false salt and missed salt."""
from __future__ import annotations

from typing import Any

from bench.report.load import RunData
from bench.report.sections.gallery import tiles

ID, TITLE, HEADING = "gallery", "Gallery", "Prediction gallery"


def context(run: RunData) -> dict[str, Any]:
    """The gallery's rows (none without finished cells or gallery.npz) and the colours its legend names."""
    return {
        "gallery": tiles.gallery_rows(run.gallery, run.board, run.oof_images) if run.has_cells and run.gallery else [],
        "legend": [(name, tiles.css_colour(colour)) for name, colour in tiles.LEGEND],
        "truth_colour": tiles.css_colour(tiles.TRUTH),
    }
