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


def gate_precision_plot(rows: Sequence[dict], target: float) -> bytes | None:
    """Realized precision per label with its Wilson 95% interval, against the gate's target."""
    judged = [r for r in rows if r["precision"] is not None]
    if not judged:
        return None
    fig, ax = figure()
    x = np.arange(len(judged))
    points = np.array([r["precision"] for r in judged])
    below = np.clip(points - np.array([r["lower"] for r in judged]), 0, None)  # rounding: never negative
    above = np.clip(np.array([r["upper"] for r in judged]) - points, 0, None)
    colors = [REFERENCE_COLOR if r["serving"] else CURRENT_COLOR for r in judged]
    ax.bar(x, points, 0.6, color=colors)
    ax.errorbar(x, points, yerr=[below, above], fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xticks(x, [f"{r['label'].replace('_', chr(10))}\n({r['audited']})" for r in judged], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("realized precision (audited gated cases)")
    shut = [r["label"] for r in judged if not r["serving"]]
    ax.set_title("Gate precision on live traffic" + (f" (shut off: {', '.join(shut)})" if shut else ""), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)
