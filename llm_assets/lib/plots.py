"""Small PNG charts for materialization metadata (matplotlib, Agg backend), with no Dagster import.

Each function returns the PNG bytes of one small figure; `markdown_image` turns them into a
markdown image with a base64 data URI, which the Dagster UI renders inside materialization
metadata (its markdown sanitizer allows `data:` image sources).
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np

FIGSIZE = (5.2, 3.0)
DPI = 80  # small PNGs: they travel inside the event log
REFERENCE_COLOR, CURRENT_COLOR = "#7f8c9a", "#d9822b"


def figure():
    # A bare `Figure` (its PNG drawn by the Agg canvas), not pyplot: no global figure registry or
    # backend selection, safe in threads, and the pyplot import (about 0.5 s of CPU, paid again by
    # every run's process) is skipped.
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def stacked_bars(categories: Sequence[str], stacks: dict[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """One bar per category, stacked by series (e.g. `enriched/cases` routes: decided now / from cache)."""
    fig, ax = figure()
    bottom = np.zeros(len(categories))
    for (name, values), color in zip(stacks.items(), (CURRENT_COLOR, REFERENCE_COLOR, "#4a90a4", "#8e6bb5")):
        ax.bar(categories, values, 0.6, bottom=bottom, label=name, color=color)
        bottom += np.asarray(values, dtype=float)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image whose source is the PNG itself (a data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
