"""Classification metrics and the paired bootstrap behind `no_regression_vs_production`; no Dagster.

Why a paired bootstrap of the macro-F1 difference (and not McNemar): the gate's headline metric
is macro-F1, a per-label average that McNemar's test on per-case correctness does not see (a
candidate can keep its accuracy and lose a small label entirely). Both versions are evaluated
on the SAME golden cases, so each resample draws case indices once and scores both versions on
them: the case-to-case difficulty cancels out and the interval is that of the difference itself.
The same resamples give an interval for each label's recall difference.

The resampling is vectorized over a `(resamples, cases)` index matrix: 2,000 resamples of 200
cases take a few milliseconds. The seed is fixed, so a check re-run gives the same interval.
"""

from dataclasses import dataclass

import numpy as np

# sklearn is imported where used: it costs about 5 s, and every run (the sensor's micro-batches too)
# imports this module with the code location.


@dataclass(frozen=True)
class Interval:
    estimate: float  # on the golden cases as they are
    low: float
    high: float

    def below_zero(self) -> bool:
        """The whole interval is below zero: a drop the resampling supports."""
        return self.high < 0.0

    def as_text(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus production on the same cases, with bootstrap intervals."""

    cases: int
    resamples: int
    confidence: float
    macro_f1_diff: Interval
    recall_diff: dict[str, Interval]  # per label present in the truth


def label_metrics(truth: list[str], predicted: list[str], labels: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per label (0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    return {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)}


def macro_f1(truth: list[str], predicted: list[str], labels: list[str]) -> float:
    """Macro-F1 over `labels` (pass the labels present in the truth: an absent label is not averaged in)."""
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)) if truth else 0.0


def _encode(values, index: dict[str, int]) -> np.ndarray:
    # A label outside `labels` (None, an unknown string) is code -1: never a true positive.
    return np.array([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)


def _f1_and_recall(truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per resample (rows) and label: F1 (0 when undefined, as sklearn with zero_division=0) and recall
    (NaN when the resample has no case of the label)."""
    f1s, recalls = [], []
    for label in range(n_labels):
        is_true, is_pred = truth == label, predicted == label
        tp = (is_true & is_pred).sum(axis=-1)
        fp = (~is_true & is_pred).sum(axis=-1)
        fn = (is_true & ~is_pred).sum(axis=-1)
        denominator = 2 * tp + fp + fn
        f1s.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
        support = tp + fn
        recalls.append(np.where(support > 0, tp / np.maximum(support, 1), np.nan))
    return np.stack(f1s, axis=-1), np.stack(recalls, axis=-1)


def paired_bootstrap(truth: list[str], candidate: list[str], production: list[str], *, labels: list[str] | None = None,
                     resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Percentile intervals of candidate - production macro-F1 and per-label recall, resampling
    the cases (the same draw for both versions)."""
    if not (len(truth) == len(candidate) == len(production)) or not truth:
        raise ValueError("paired_bootstrap needs the same non-empty cases for truth, candidate and production")
    labels = sorted(set(truth)) if labels is None else list(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    t, c, p = _encode(truth, index), _encode(candidate, index), _encode(production, index)
    n = len(t)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    f1_c, rec_c = _f1_and_recall(t[draws], c[draws], len(labels))
    f1_p, rec_p = _f1_and_recall(t[draws], p[draws], len(labels))
    diff = f1_c.mean(axis=1) - f1_p.mean(axis=1)
    alpha = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(diff, [alpha, 100 - alpha])
    point = macro_f1(truth, candidate, labels) - macro_f1(truth, production, labels)
    full_c, full_p = label_metrics(truth, candidate, labels), label_metrics(truth, production, labels)
    recall_diff = {}
    for i, lab in enumerate(labels):
        per = rec_c[:, i] - rec_p[:, i]
        per = per[~np.isnan(per)]
        lo, hi = np.percentile(per, [alpha, 100 - alpha]) if per.size else (0.0, 0.0)
        recall_diff[lab] = Interval(round(full_c[lab]["recall"] - full_p[lab]["recall"], 6), float(lo), float(hi))
    return PairedComparison(cases=n, resamples=resamples, confidence=confidence,
                            macro_f1_diff=Interval(round(point, 6), float(low), float(high)), recall_diff=recall_diff)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0.0 for no values."""
    return float(np.percentile(values, q)) if values else 0.0
