"""PNG plots of a drift report and small charts for other metadata (matplotlib, Agg backend), with
no Dagster import.

Each function returns the PNG bytes of one small figure; `markdown_image` turns them into a
markdown image with a base64 data URI, which the Dagster UI renders inside materialization
metadata (its markdown sanitizer allows `data:` image sources).
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np

from llm_assets.monitoring.drift import DriftReport

FIGSIZE = (5.2, 3.0)
DPI = 80  # small PNGs: they travel inside the event log
REFERENCE_COLOR, CURRENT_COLOR = "#7f8c9a", "#d9822b"


def _figure():
    # A bare `Figure` (its PNG drawn by the Agg canvas), not pyplot: no global figure registry or
    # backend selection, safe in threads, and the pyplot import (about 0.5 s of CPU, paid again by
    # every run's process) is skipped.
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _verdict(drifted: bool) -> str:
    return "DRIFT" if drifted else "no drift"


def label_mix_plot(report: DriftReport) -> bytes | None:
    """Label shares, reference beside current."""
    mix = report.label_mix
    if mix is None:
        return None
    fig, ax = _figure()
    labels = list(mix.reference_shares)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [mix.reference_shares[k] for k in labels], 0.4, label="reference", color=REFERENCE_COLOR)
    ax.bar(x + 0.2, [mix.current_shares[k] for k in labels], 0.4, label="current", color=CURRENT_COLOR)
    ax.set_xticks(x, [k.replace("_", "\n") for k in labels], fontsize=7)
    ax.set_ylabel("share of cases")
    ax.set_title(f"Label mix: PSI {mix.psi:.3f}, JS {mix.js_distance:.3f} ({_verdict(mix.drifted)})", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def confidence_plot(report: DriftReport, reference: Sequence[float], current: Sequence[float]) -> bytes | None:
    """Empirical CDFs of the confidence in both windows (the KS statistic is their largest gap)."""
    result = report.confidence
    if result is None:
        return None
    fig, ax = _figure()
    for values, name, color in ((reference, "reference", REFERENCE_COLOR), (current, "current", CURRENT_COLOR)):
        xs = np.sort(np.asarray(values, dtype=float))
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=name, color=color)
    ax.set_xlabel("confidence")
    ax.set_ylabel("share of cases at or below")
    ax.set_title(f"Confidence: KS {result.ks_statistic:.3f}, p {result.p_value:.3g} ({_verdict(result.drifted)})",
                 fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def embedding_plot(report: DriftReport) -> bytes | None:
    """The domain classifier's held-out P(current), per window: apart when the texts drifted."""
    emb = report.embedding
    if emb is None:
        return None
    fig, ax = _figure()
    scores, is_current = emb.held_out_scores, emb.held_out_is_current
    # The scores' own range: a regularized classifier keeps them near the base rate.
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1e-6, 21)
    ax.hist(scores[~is_current], bins=bins, alpha=0.6, label="reference", color=REFERENCE_COLOR, density=True)
    ax.hist(scores[is_current], bins=bins, alpha=0.6, label="current", color=CURRENT_COLOR, density=True)
    ax.set_xlabel("classifier's P(current) on held-out texts")
    ax.set_ylabel("density")
    ax.set_title(f"Texts: ROC AUC {emb.roc_auc:.3f} vs {emb.threshold:.3f} ({_verdict(emb.drifted)})", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def stacked_bars(categories: Sequence[str], stacks: dict[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """One bar per category, stacked by series (e.g. `enriched/cases` routes: decided now / from cache)."""
    fig, ax = _figure()
    bottom = np.zeros(len(categories))
    for (name, values), color in zip(stacks.items(), (CURRENT_COLOR, REFERENCE_COLOR, "#4a90a4", "#8e6bb5")):
        ax.bar(categories, values, 0.6, bottom=bottom, label=name, color=color)
        bottom += np.asarray(values, dtype=float)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image whose source is the PNG itself (a data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
