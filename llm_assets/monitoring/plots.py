"""PNG plots of a drift report (matplotlib, Agg backend), with no Dagster import.

The figure helpers and `markdown_image` are in `llm_assets/lib/plots.py`, shared with the other
domains' metadata.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from llm_assets.lib.plots import CURRENT_COLOR, REFERENCE_COLOR, figure, png_bytes, markdown_image
from llm_assets.monitoring.drift import DriftReport

__all__ = ["confidence_plot", "embedding_plot", "label_mix_plot", "markdown_image"]


def _verdict(drifted: bool) -> str:
    return "DRIFT" if drifted else "no drift"


def label_mix_plot(report: DriftReport) -> bytes | None:
    """Label shares, reference beside current."""
    mix = report.label_mix
    if mix is None:
        return None
    fig, ax = figure()
    labels = list(mix.reference_shares)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [mix.reference_shares[k] for k in labels], 0.4, label="reference", color=REFERENCE_COLOR)
    ax.bar(x + 0.2, [mix.current_shares[k] for k in labels], 0.4, label="current", color=CURRENT_COLOR)
    ax.set_xticks(x, [k.replace("_", "\n") for k in labels], fontsize=7)
    ax.set_ylabel("share of cases")
    ax.set_title(f"Label mix: PSI {mix.psi:.3f}, JS {mix.js_distance:.3f} ({_verdict(mix.drifted)})", fontsize=9)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def confidence_plot(report: DriftReport, reference: Sequence[float], current: Sequence[float]) -> bytes | None:
    """Empirical CDFs of the confidence in both windows (the KS statistic is their largest gap)."""
    result = report.confidence
    if result is None:
        return None
    fig, ax = figure()
    for values, name, color in ((reference, "reference", REFERENCE_COLOR), (current, "current", CURRENT_COLOR)):
        xs = np.sort(np.asarray(values, dtype=float))
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=name, color=color)
    ax.set_xlabel("confidence")
    ax.set_ylabel("share of cases at or below")
    ax.set_title(f"Confidence: KS {result.ks_statistic:.3f}, p {result.p_value:.3g} ({_verdict(result.drifted)})",
                 fontsize=9)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def embedding_plot(report: DriftReport) -> bytes | None:
    """The domain classifier's held-out P(current), per window: apart when the texts drifted."""
    emb = report.embedding
    if emb is None:
        return None
    fig, ax = figure()
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
    return png_bytes(fig)
