"""Drift statistics of enriched cases against a reference window, with no Dagster import.

Three questions, each answered by a small function on plain arrays:

- **embedding drift**: can a classifier tell the current case texts from the reference ones?
  As Evidently's default `model` method: a logistic regression on the sentence embeddings
  (its regularization chosen by cross-validation) is trained on half the rows and scored on
  the other half; the held-out ROC AUC is the drift score. Drift above 0.55, or, when a
  window holds 1,000 rows or fewer, above the AUC a random classifier reaches on the same
  held-out scores (bootstrapped). The distance between the windows' mean embeddings is
  reported beside it.
- **label-mix drift**: Population Stability Index and Jensen-Shannon distance of the label
  shares. Both must exceed their thresholds (PSI alone overreacts to a rare label, its log
  ratio explodes), and the shift must be more than sampling noise (a chi-squared test of the
  label counts): a window of a hundred cases moves PSI past 0.2 by chance alone.
- **confidence drift**: two-sample Kolmogorov-Smirnov test.

`drift_report` runs the three and the report drifts when any of them does. That makes three
chances of a false alarm a day, so each test runs at 0.5% (the bootstrap's 99.5th percentile,
chi-squared and KS alpha 0.005) where Evidently, judging one column, uses 5%: on windows of
100 to 150 cases drawn from one distribution, the report alarmed 2 times in 100 (one false
warning in about two months of daily reports).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

# scipy is imported where used: `scipy.stats` costs about 3 s, and every run (the sensor's micro-batches
# too) imports this module with the code location.

# Evidently's fixed AUC threshold and bootstrap rule for the `model` embedding method, the
# usual PSI rule of thumb (0.1 moderate, 0.2 significant) and Evidently's JS threshold; the
# bootstrap quantile and the alphas are at 0.5% because the report alarms on any of three tests.
AUC_THRESHOLD = 0.55
BOOTSTRAP_MAX_ROWS = 1000
BOOTSTRAP_QUANTILE = 0.995
PSI_THRESHOLD = 0.2
JS_THRESHOLD = 0.1
KS_ALPHA = 0.005
CHI2_ALPHA = 0.005
SHARE_FLOOR = 1e-4  # a share of 0 would make PSI infinite


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds of the three tests (defaults above)."""

    auc_threshold: float = AUC_THRESHOLD
    bootstrap_max_rows: int = BOOTSTRAP_MAX_ROWS
    bootstrap_quantile: float = BOOTSTRAP_QUANTILE
    bootstrap_rounds: int = 1000
    cv_folds: int = 3
    classifier_cs: tuple[float, ...] = (0.1, 1.0, 10.0)
    psi_threshold: float = PSI_THRESHOLD
    js_threshold: float = JS_THRESHOLD
    ks_alpha: float = KS_ALPHA
    chi2_alpha: float = CHI2_ALPHA
    seed: int = 0


@dataclass(frozen=True)
class EmbeddingDrift:
    roc_auc: float
    threshold: float
    threshold_kind: str  # "bootstrap" (small windows) or "fixed"
    drifted: bool
    mean_distance: float  # euclidean distance between the windows' mean embeddings
    mean_cosine_distance: float
    reference_rows: int
    current_rows: int
    # The classifier's P(current) for the held-out rows, and which of them are current (for plots).
    held_out_scores: np.ndarray = field(repr=False, compare=False)
    held_out_is_current: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class LabelMixDrift:
    psi: float
    js_distance: float
    chi2_p_value: float
    psi_threshold: float
    js_threshold: float
    chi2_alpha: float
    drifted: bool
    reference_shares: dict[str, float]
    current_shares: dict[str, float]


@dataclass(frozen=True)
class ConfidenceDrift:
    ks_statistic: float
    p_value: float
    alpha: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    embedding: EmbeddingDrift | None
    label_mix: LabelMixDrift | None
    confidence: ConfidenceDrift | None
    reference_rows: int
    current_rows: int
    notes: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        return any(part is not None and part.drifted for part in (self.embedding, self.label_mix, self.confidence))

    def drifted_parts(self) -> list[str]:
        parts = {"embedding": self.embedding, "label_mix": self.label_mix, "confidence": self.confidence}
        return [name for name, part in parts.items() if part is not None and part.drifted]

    def metric_rows(self) -> list[dict]:
        """One row per metric: `metric`, `value`, `threshold`, `drift_detected` (None: informational)."""
        rows: list[dict] = []
        e, m, c = self.embedding, self.label_mix, self.confidence
        if e is not None:
            rows += [
                {"metric": "embedding_domain_classifier_roc_auc", "value": e.roc_auc, "threshold": e.threshold,
                 "drift_detected": e.drifted, "method": f"logistic regression, {e.threshold_kind} threshold"},
                {"metric": "embedding_mean_euclidean_distance", "value": e.mean_distance, "threshold": None,
                 "drift_detected": None, "method": "distance between mean embeddings"},
                {"metric": "embedding_mean_cosine_distance", "value": e.mean_cosine_distance, "threshold": None,
                 "drift_detected": None, "method": "1 - cosine of the mean embeddings"},
            ]
        if m is not None:
            rows += [
                {"metric": "label_mix_psi", "value": m.psi, "threshold": m.psi_threshold, "drift_detected": m.drifted,
                 "method": "population stability index (with JS distance)"},
                {"metric": "label_mix_js_distance", "value": m.js_distance, "threshold": m.js_threshold,
                 "drift_detected": m.drifted, "method": "Jensen-Shannon distance (with PSI)"},
                {"metric": "label_mix_chi2_p_value", "value": m.chi2_p_value, "threshold": m.chi2_alpha,
                 "drift_detected": m.drifted, "method": "chi-squared test of the label counts"},
            ]
        if c is not None:
            rows += [
                {"metric": "confidence_ks_statistic", "value": c.ks_statistic, "threshold": None,
                 "drift_detected": None, "method": "two-sample Kolmogorov-Smirnov"},
                {"metric": "confidence_ks_p_value", "value": c.p_value, "threshold": c.alpha,
                 "drift_detected": c.drifted, "method": "drift when p < alpha"},
            ]
        return rows

    def summary(self) -> dict:
        """A JSON-friendly summary (no arrays)."""
        out: dict = {"drifted": self.drifted, "drifted_parts": self.drifted_parts(),
                     "reference_rows": self.reference_rows, "current_rows": self.current_rows,
                     "notes": list(self.notes)}
        if self.embedding is not None:
            out["embedding"] = {k: v for k, v in asdict(self.embedding).items() if not k.startswith("held_out")}
        if self.label_mix is not None:
            out["label_mix"] = asdict(self.label_mix)
        if self.confidence is not None:
            out["confidence"] = asdict(self.confidence)
        return out


# -- embedding drift -------------------------------------------------------------------------
def _rank_auc(ranks: np.ndarray, positives: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """ROC AUC from the ranks of the positive rows (Mann-Whitney U / (n_pos * n_neg)), row-wise."""
    return (np.take_along_axis(ranks, positives, axis=-1).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def random_classifier_auc_quantile(scores: np.ndarray, n_current: int, *, quantile: float, rounds: int,
                                   seed: int) -> float:
    """The ROC AUC that a classifier knowing nothing reaches at `quantile`: the same held-out
    scores against `rounds` random choices of which rows are "current"."""
    n = len(scores)
    rng = np.random.default_rng(seed)
    from scipy import stats

    ranks = np.broadcast_to(stats.rankdata(scores), (rounds, n))
    positives = np.argsort(rng.random((rounds, n)), axis=1)[:, :n_current]
    return float(np.quantile(_rank_auc(ranks, positives, n_current, n - n_current), quantile))


def embedding_drift(reference: np.ndarray, current: np.ndarray,
                    settings: DriftSettings = DriftSettings()) -> EmbeddingDrift:
    """Domain-classifier drift of two sets of embeddings (rows are vectors).

    As Evidently's `model` method: a stratified half of the rows trains the classifier
    (scikit-learn's `LogisticRegressionCV`: its regularization chosen by cross-validation
    on that half), the other half is scored, and the ROC AUC on that held-out half is the
    drift score. Held-out scores are independent of the held-out window labels when nothing
    drifted, so the bootstrap of a random classifier on the same scores is an exact null
    (pooling cross-validated folds into one AUC is not: the folds share training data, and
    a chance pattern inflates every fold at once).
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    reference, current = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    n_ref, n_cur = len(reference), len(current)
    if min(n_ref, n_cur) < 4:
        raise ValueError(f"embedding drift needs at least 4 rows per window, got {n_ref} and {n_cur}")
    x = np.vstack([reference, current])
    y = np.r_[np.zeros(n_ref, dtype=int), np.ones(n_cur, dtype=int)]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=settings.seed)
    model = LogisticRegressionCV(Cs=settings.classifier_cs, cv=min(settings.cv_folds, int(y_train.sum()),
                                                                    int((1 - y_train).sum())),
                                 scoring="roc_auc", max_iter=2000, l1_ratios=(0.0,), use_legacy_attributes=False)
    scores = model.fit(x_train, y_train).predict_proba(x_test)[:, 1]
    auc = float(roc_auc_score(y_test, scores))
    if min(n_ref, n_cur) <= settings.bootstrap_max_rows:
        threshold = random_classifier_auc_quantile(scores, int(y_test.sum()), quantile=settings.bootstrap_quantile,
                                                   rounds=settings.bootstrap_rounds, seed=settings.seed)
        kind = "bootstrap"
    else:
        threshold, kind = settings.auc_threshold, "fixed"
    mean_ref, mean_cur = reference.mean(axis=0), current.mean(axis=0)
    norms = float(np.linalg.norm(mean_ref) * np.linalg.norm(mean_cur))
    cosine = 1.0 - float(mean_ref @ mean_cur) / norms if norms else 0.0
    return EmbeddingDrift(roc_auc=auc, threshold=threshold, threshold_kind=kind, drifted=auc > threshold,
                          mean_distance=float(np.linalg.norm(mean_ref - mean_cur)), mean_cosine_distance=cosine,
                          reference_rows=n_ref, current_rows=n_cur, held_out_scores=scores,
                          held_out_is_current=y_test.astype(bool))


# -- label-mix drift -------------------------------------------------------------------------
def category_counts(values: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    return np.array([sum(1 for v in values if v == c) for c in categories], dtype=np.float64)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts


def chi2_p_value(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """p-value of a chi-squared test that both windows draw labels from one distribution."""
    table = np.vstack([reference_counts, current_counts])
    table = table[:, table.sum(axis=0) > 0]  # a label absent from both windows says nothing
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    from scipy import stats

    return float(stats.chi2_contingency(table, correction=False).pvalue)


def population_stability_index(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    r = np.clip(reference_shares, SHARE_FLOOR, None)
    c = np.clip(current_shares, SHARE_FLOOR, None)
    return float(np.sum((c - r) * np.log(c / r)))


def label_mix_drift(reference_labels: Sequence[str], current_labels: Sequence[str],
                    settings: DriftSettings = DriftSettings(),
                    categories: Sequence[str] | None = None) -> LabelMixDrift:
    """PSI and Jensen-Shannon distance of two label samples; drift when both exceed their thresholds
    and a chi-squared test says the difference is not sampling noise."""
    cats = list(categories) if categories is not None else sorted(set(reference_labels) | set(current_labels))
    cats += sorted((set(reference_labels) | set(current_labels)) - set(cats))  # labels outside the list count too
    r_counts, c_counts = category_counts(reference_labels, cats), category_counts(current_labels, cats)
    r, c = _shares(r_counts), _shares(c_counts)
    psi = population_stability_index(r, c)
    p_value = chi2_p_value(r_counts, c_counts)
    from scipy.spatial import distance

    js = float(distance.jensenshannon(r, c)) if r.sum() and c.sum() else 0.0
    js = 0.0 if math.isnan(js) else js
    return LabelMixDrift(psi=psi, js_distance=js, chi2_p_value=p_value, psi_threshold=settings.psi_threshold,
                         js_threshold=settings.js_threshold, chi2_alpha=settings.chi2_alpha,
                         drifted=psi > settings.psi_threshold and js > settings.js_threshold
                         and p_value < settings.chi2_alpha,
                         reference_shares={k: float(v) for k, v in zip(cats, r)},
                         current_shares={k: float(v) for k, v in zip(cats, c)})


# -- confidence drift ------------------------------------------------------------------------
def confidence_drift(reference: Sequence[float], current: Sequence[float],
                     settings: DriftSettings = DriftSettings()) -> ConfidenceDrift:
    from scipy import stats

    result = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
    p = float(result.pvalue)
    return ConfidenceDrift(ks_statistic=float(result.statistic), p_value=p, alpha=settings.ks_alpha,
                           drifted=p < settings.ks_alpha)


# -- the report ------------------------------------------------------------------------------
MIN_ROWS = 10  # below this per window, a test says nothing useful: it is skipped with a note


def drift_report(*, reference_embeddings: np.ndarray | None, current_embeddings: np.ndarray | None,
                 reference_labels: Sequence[str], current_labels: Sequence[str],
                 reference_confidence: Sequence[float], current_confidence: Sequence[float],
                 settings: DriftSettings = DriftSettings(), categories: Sequence[str] | None = None) -> DriftReport:
    """All three tests of one current window against its reference window."""
    notes = []
    n_ref, n_cur = len(reference_labels), len(current_labels)
    embedding = label_mix = confidence = None
    if min(n_ref, n_cur) < MIN_ROWS:
        notes.append(f"too few cases to compare ({n_ref} reference, {n_cur} current; at least {MIN_ROWS} each)")
        return DriftReport(None, None, None, n_ref, n_cur, tuple(notes))
    if reference_embeddings is not None and current_embeddings is not None:
        if min(len(reference_embeddings), len(current_embeddings)) >= MIN_ROWS:
            embedding = embedding_drift(reference_embeddings, current_embeddings, settings)
        else:
            notes.append("too few texts for embedding drift")
    label_mix = label_mix_drift(reference_labels, current_labels, settings, categories)
    confidence = confidence_drift(reference_confidence, current_confidence, settings)
    return DriftReport(embedding, label_mix, confidence, n_ref, n_cur, tuple(notes))
