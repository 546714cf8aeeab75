"""What every section's figures share: the Agg backend, one style, one colour per architecture, the score's axis
label, and each figure returned as a base64 PNG data URI so the HTML file stays self-contained."""
from __future__ import annotations

import base64
import contextlib
import io
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

#: the style of every figure: ``with plt.rc_context(plots.RC)``
RC = {**sns.axes_style("whitegrid"), "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
      "figure.dpi": 100, "savefig.dpi": 100}
Palette = dict[str, Any]


def palette(order: list[str]) -> Palette:
    """One stable colour per architecture, shared by every figure."""
    return dict(zip(order, sns.color_palette("tab10", max(len(order), 1))))


def png_uri(fig: plt.Figure) -> str:
    """Render and close ``fig``; no metadata, so the file carries no URL or version string."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return data_uri(buf.getvalue())


@contextlib.contextmanager
def fixed_jitter(seed: int = 0) -> Iterator[None]:
    """Seed numpy's global generator for the duration of a plot and put its state back: seaborn jitters strip plots
    with ``np.random.uniform``, which would make the same run's report differ from one render to the next."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI: the report embeds every image, so it opens with no network and no files."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


#: the y label of a plot of the leaderboard's ``score``, by its ``score_source``
SCORE_LABEL = {"holdout": "locked-holdout TGS score", "oof": "cross-fitted OOF TGS score"}


def score_label(board: pd.DataFrame) -> str:
    """The axis label of the ranked score: what it was measured on (holdout or cross-fitted OOF)."""
    return SCORE_LABEL[str(board["score_source"].iloc[0])]
