"""`salt-bench report`: one run directory -> one self-contained HTML file (inline CSS, base64 figures,
no network access when opened). Every string from data or config goes through Jinja2 autoescape."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bench import atomic, results
from bench.report import sections
from bench.report.load import RunData, load_run
from bench.rundir import RunDir


def _fmt(value: Any, spec: str = ".4f") -> str:
    """Number for the page, or "n/a" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _environment() -> jinja2.Environment:
    """Templates under bench/report; a part keeps its last newline so the page closes its section right after it."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    return env


def render(run: RunData) -> str:
    """The page: each section the run shows, numbered in order, its part rendered from its own context (every part
    also sees ``run`` and ``number``, the number of each section shown, for references between sections)."""
    env = _environment()
    shown = sections.shown(run)
    number = {section.ID: k for k, section in enumerate(shown, 1)}
    parts = [{"id": section.ID, "title": section.TITLE, "heading": section.HEADING,
              "html": Markup(env.get_template(f"sections/{section.ID}/part.html.j2")
                             .render(run=run, number=number, **section.context(run)))}
             for section in shown]
    return env.get_template("page.html.j2").render(run=run, sections=parts)


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """``salt-bench report``: bring the run's aggregation up to date with its finished cells (the loader only
    reads), then write the report of ``run_dir`` (default ``<run_dir>/report.html``) atomically; return its path."""
    if RunDir(run_dir).protocol_file.is_file() and RunDir(run_dir).done_cells():
        results.current(run_dir)
    run = load_run(Path(run_dir))
    path = Path(out) if out is not None else RunDir(run_dir).report_file
    return atomic.write_text(path, render(run))
