"""The one renderer of the rig's pages (the run report, the sweep): Jinja2 templates in
rig/templates, HTML autoescaped.

The modules that gather the numbers (rig/report.py, rig/sweep.py) hand over plain data: tables
as rows of strings, plots as SVG already rendered by rig/svgplot.py (which escapes its own text,
so the templates take it as it is), notes. The templates hold all the markup, Markdown's too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class Table:
    id: str  # the HTML section id
    title: str
    header: list[str]
    rows: list[list[str]]
    empty: str = "none"  # said instead of a table without rows


def md_cell(text: str) -> str:
    """A Markdown table cell: a `|` or a line break would end it early."""
    return text.replace("|", "\\|").replace("\n", " ")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        # Markdown is line-based: a block tag's own line leaves no blank line or indent behind.
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = md_cell
    return env


def render(template: str, **context: Any) -> str:
    """rig/templates/`template` with `context`; a `.html.j2` template escapes every value."""
    return _environment().get_template(template).render(**context)
