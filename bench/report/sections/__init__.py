"""The report's sections, in page order. A section is a folder here: its ``__init__.py`` gives ``ID`` (the folder's
name and the page anchor), ``TITLE`` (the navigation), ``HEADING`` (above the section) and ``context(run)`` (the
variables of its template), and ``part.html.j2`` is its template; a section that only some runs show also gives
``applies(run)``.
Adding a section is one folder and one line in ``SECTIONS``; numbering and navigation follow the sections shown."""
from __future__ import annotations

from typing import Any, Protocol

from bench.report.load import RunData
from bench.report.sections import coverage, curves, folds, gallery, head, header, leaderboard, pareto, tuning, verdict


class Section(Protocol):
    ID: str
    TITLE: str
    HEADING: str

    def context(self, run: RunData) -> dict[str, Any]: ...


SECTIONS: list[Section] = [header, leaderboard, verdict, folds, curves, coverage, head, pareto, gallery, tuning]


def shown(run: RunData) -> list[Section]:
    """The sections this run shows, in page order: every section without ``applies``, and those whose
    ``applies(run)`` is true (the head's only in runs trained with it)."""
    return [section for section in SECTIONS if not hasattr(section, "applies") or section.applies(run)]
