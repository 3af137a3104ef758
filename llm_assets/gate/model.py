"""The embedding gate: decides when a case can skip the LLM call.

A multinomial logistic regression over normalized sentence embeddings (384-d, from the
packaged all-MiniLM-L6-v2) predicts the case label; a temperature calibration fitted on a
validation set it never trained on turns its scores into probabilities (the `confidence`
means "this label is right this often"). Each label has its own threshold, the lowest
confidence at which that label's predictions on the validation set reach the target
precision (default 0.97); a case whose confidence reaches its predicted label's threshold
takes the `gate` route, the rest go to the LLM. Without a validation set the calibration
and the thresholds come from cross-validation on the training set (optimistic: its cases
share phrasings with the training cases).

This module owns training (with out-of-fold metrics, expected calibration error and the
thresholds as training metadata), prediction, evaluation on labelled sets, and versioned,
integrity-checked storage of the model in the artifact store (`models/embedding_gate/<version>/`).
Serving needs no scikit-learn: the fitted linear model is also stored as plain numpy arrays and
`load_gate` predicts with those (importing scikit-learn costs each fresh run process seconds of
CPU); the joblib file stays for provenance and for gates saved before the arrays existed.
Pure logic: no Dagster and no embedding-model import (callers pass embeddings and the store in).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    from llm_assets.resources.artifacts import ArtifactStore

# The global threshold of gates stored before per-label thresholds existed, and the override
# `decide(threshold=...)` takes for experiments.
DEFAULT_THRESHOLD = 0.85
DEFAULT_TARGET_PRECISION = 0.97
# Temperature scaling: one parameter, keeps the argmax. Measured on the sample validation split
# (500 cases of unseen phrasing families): ECE 0.06 vs 0.10 for per-label sigmoid, 0.24 uncalibrated.
DEFAULT_CALIBRATION_METHOD = "temperature"
# A label gates only if at least this many validation predictions back its threshold, and never
# below this confidence (a 5-way prediction under 0.5 is a guess, whatever precision said).
MIN_THRESHOLD_SUPPORT = 10
MIN_THRESHOLD = 0.5
ECE_BINS = 10
# C=1 measured on the sample data once calibrated: held-out accuracy 0.775 (C=10: 0.765), gated
# share in distribution 0.60 (C=10: 0.48) at the same gated accuracy; a stronger prior generalizes.
DEFAULT_C = 1.0
ARTIFACT_PREFIX = "models/embedding_gate"
METADATA_FILE = "training.json"
FORMAT = "llm-assets-gate/1"
LINEAR_FORMAT = "llm-assets-gate-linear/1"
# Stored arrays must reproduce the fitted classifier's probabilities this closely, or are not stored.
LINEAR_TOLERANCE = 1e-9
_LINEAR_ARRAYS = ("classes", "coef", "intercept", "temperature", "tempered")

_RESOLVED_PREFIX = re.compile(r"^Resolved case \([^)]*\):\s*")
_RESOLUTION_SUFFIX = " Resolution: "


class GatePrediction(NamedTuple):
    label: str
    confidence: float


class GateDecision(NamedTuple):
    label: str
    confidence: float
    gated: bool  # True: confident enough to skip the LLM
    threshold: float | None = None  # the threshold this decision was held to (None: the label never gates)


class GateIntegrityError(RuntimeError):
    """The stored model file does not match the sha256 recorded when it was saved."""


class GateNotFound(FileNotFoundError):
    """No stored gate model where one was expected."""


@dataclass(frozen=True)
class TrainingSet:
    texts: list[str]
    labels: list[str]
    skipped: int = 0  # extra rows dropped (empty text, unknown label)


def case_text_of_resolved_case(content: str) -> str:
    """The case description inside a KB resolved case, without the wrapper.

    KB resolved cases read `Resolved case (<label>): <case text> Resolution: <actions>`.
    The wrapper names the label and the resolution, which live cases never contain: training
    on it teaches the classifier the wrong cue and halves its confident share.
    """
    text = _RESOLVED_PREFIX.sub("", content, count=1)
    head, sep, _ = text.partition(_RESOLUTION_SUFFIX)
    return head.strip() if sep else text.strip()


def training_examples(
    resolved_cases: Iterable[dict],
    extra: Iterable[tuple[str, str]] = (),
    *,
    allowed_labels: Sequence[str] | None = None,
) -> TrainingSet:
    """Texts and labels for `train_gate`: KB resolved cases, plus analyst-rated `(text, label)` rows.

    Resolved cases without a label are ignored. Extra rows with an empty text or a label
    outside `allowed_labels` (when given) are skipped and counted, never an error: ratings
    are imported from files that humans edit.
    """
    texts: list[str] = []
    labels: list[str] = []
    for doc in resolved_cases:
        if doc.get("label"):
            texts.append(case_text_of_resolved_case(doc["content"]))
            labels.append(str(doc["label"]))
    skipped = 0
    allowed = set(allowed_labels) if allowed_labels is not None else None
    for text, label in extra:
        if not text or not str(text).strip() or not label or (allowed is not None and label not in allowed):
            skipped += 1
            continue
        texts.append(str(text))
        labels.append(str(label))
    return TrainingSet(texts, labels, skipped)


def texts_fingerprint(texts: Iterable[str]) -> str:
    """sha256 of the training texts, in order; pass it to `train_gate` to version by text."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def _as_matrix(embeddings: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (cases x dims), got shape {matrix.shape}")
    return matrix


def _gate_version(data_fingerprint: str, labels: Sequence[str], params: dict, sklearn_version: str) -> str:
    payload = json.dumps(
        {"data": data_fingerprint, "labels": list(labels), "params": params, "sklearn": sklearn_version},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by size."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def per_label_thresholds(
    y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, target_precision: float,
    *, min_support: int = MIN_THRESHOLD_SUPPORT, floor: float = MIN_THRESHOLD,
) -> dict[str, float | None]:
    """For each label, the lowest confidence whose predictions of that label (at or above it) reach
    `target_precision` on these cases; None when no such threshold has `min_support` predictions."""
    predicted = classes[proba.argmax(axis=1)]
    confidence = proba.max(axis=1)
    thresholds: dict[str, float | None] = {}
    for label in classes:
        mine = predicted == label
        order = np.argsort(-confidence[mine], kind="stable")
        conf = confidence[mine][order]
        hits = (y_true[mine][order] == label).astype(float)
        # Decide at the last case of each run of equal confidences: a threshold admits all of them.
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        last_of_tie = np.append(conf[1:] < conf[:-1], True) if len(conf) else np.array([], dtype=bool)
        ok = (precision >= target_precision) & last_of_tie & (np.arange(1, len(conf) + 1) >= min_support)
        chosen = float(conf[np.flatnonzero(ok)[-1]]) if ok.any() else None
        thresholds[str(label)] = None if chosen is None else round(max(floor, chosen), 6)
    return thresholds


def _gated(predicted: np.ndarray, confidence: np.ndarray, thresholds: dict[str, float | None] | float) -> np.ndarray:
    if isinstance(thresholds, (int, float)):
        return confidence >= float(thresholds)
    limits = np.array([np.inf if thresholds.get(str(p)) is None else thresholds[str(p)] for p in predicted])
    return confidence >= limits if len(predicted) else np.zeros(0, dtype=bool)


def labelled_metrics(y_true: Sequence[str] | np.ndarray, proba: np.ndarray, classes: np.ndarray,
                     thresholds: dict[str, float | None] | float) -> dict:
    """Accuracy, gated share, gated accuracy and ECE of predicted probabilities on labelled cases."""
    y_true = np.asarray([str(v) for v in y_true])
    predicted = classes[proba.argmax(axis=1)]
    confidence = proba.max(axis=1)
    gated = _gated(predicted, confidence, thresholds)
    correct = predicted == y_true
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(correct.mean()), 4) if len(y_true) else None,
        "gated_share": round(float(gated.mean()), 4) if len(y_true) else None,
        "gated_accuracy": round(float(correct[gated].mean()), 4) if gated.any() else None,
        "gated": int(gated.sum()),
        "ece": round(expected_calibration_error(confidence, correct), 4) if len(y_true) else None,
        "per_label_accuracy": {
            str(lab): round(float(correct[y_true == lab].mean()), 4) for lab in classes if (y_true == lab).any()
        },
    }


def _out_of_fold_proba(matrix: np.ndarray, y: np.ndarray, params: dict, seed: int, folds: int) -> np.ndarray | None:
    """Out-of-fold probabilities of the logistic regression on its own training set (columns: sorted labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_splits = min(folds, int(min(np.unique(y, return_counts=True)[1])))
    if n_splits < 2:
        return None  # a label with a single example: no honest out-of-fold estimate
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(**params), matrix, y, cv=splitter, method="predict_proba")


def _tempered(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of the log-probabilities divided by `temperature` (the argmax never changes)."""
    logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """The temperature that minimizes the negative log-likelihood of `y` under `proba` (one parameter)."""
    from scipy.optimize import minimize_scalar

    index = {str(c): i for i, c in enumerate(classes)}
    truth = np.array([index[str(v)] for v in y])
    rows = np.arange(len(truth))

    def nll(log_t: float) -> float:
        return float(-np.log(np.clip(_tempered(proba, float(np.exp(log_t)))[rows, truth], 1e-12, None)).mean())

    return round(float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x)), 6)


class TemperatureScaled:
    """A fitted classifier whose probabilities are tempered by a temperature fitted on other cases."""

    def __init__(self, base, temperature: float):
        self.base = base
        self.temperature = float(temperature)
        self.classes_ = base.classes_
        self.n_features_in_ = base.n_features_in_

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return _tempered(self.base.predict_proba(matrix), self.temperature)


class LinearGateClassifier:
    """The gate's fitted logistic regression (and its temperature) in numpy: serving without scikit-learn.

    `predict_proba` computes what scikit-learn's `LogisticRegression.predict_proba` does, in the
    same operations and dtype (the gate's model is fitted on float32 embeddings, so its weights
    and probabilities are float32): more than two classes, softmax of `X @ coef.T + intercept`;
    two classes, one logit for `classes[1]` through a sigmoid. Then it tempers the probabilities
    exactly as `TemperatureScaled` does.
    """

    def __init__(self, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray, temperature: float | None):
        self.classes_ = np.asarray(classes)
        self.coef_ = np.asarray(coef)
        self.intercept_ = np.asarray(intercept)
        self.temperature = None if temperature is None else float(temperature)  # None: not tempered
        self.n_features_in_ = int(self.coef_.shape[1]) if self.coef_.ndim == 2 else 0
        problem = self._shape_problem()
        if problem:
            raise ValueError(f"inconsistent linear gate parameters: {problem}")

    def _shape_problem(self) -> str | None:
        n_classes = len(self.classes_) if self.classes_.ndim == 1 else -1
        if n_classes < 2 or self.classes_.dtype.kind != "U":
            return f"classes must be at least two labels, got {self.classes_!r}"
        if self.coef_.dtype.kind != "f" or self.intercept_.dtype.kind != "f":
            return f"coef and intercept must be floats, got {self.coef_.dtype} and {self.intercept_.dtype}"
        if self.coef_.ndim != 2 or self.coef_.shape[0] != (1 if n_classes == 2 else n_classes):
            return f"coef of shape {self.coef_.shape} does not fit {n_classes} classes"
        if self.intercept_.shape != (self.coef_.shape[0],):
            return f"intercept of shape {self.intercept_.shape} does not fit coef of shape {self.coef_.shape}"
        if not (np.isfinite(self.coef_).all() and np.isfinite(self.intercept_).all()):
            return "coef or intercept is not finite"
        if self.temperature is not None and not (np.isfinite(self.temperature) and self.temperature > 0):
            return f"temperature must be positive, got {self.temperature}"
        return None

    @classmethod
    def from_fitted(cls, classifier) -> LinearGateClassifier | None:
        """The arrays of a fitted `LogisticRegression`, bare or `TemperatureScaled`; None for anything else."""
        temperature = None
        if isinstance(classifier, TemperatureScaled):
            classifier, temperature = classifier.base, classifier.temperature
        # Only the plain class: a subclass or a one-vs-rest model may compute other probabilities.
        if type(classifier).__name__ != "LogisticRegression" or getattr(classifier, "multi_class", None) == "ovr":
            return None
        try:
            return cls(np.asarray(classifier.classes_).astype(str), classifier.coef_, classifier.intercept_,
                       temperature)
        except (AttributeError, ValueError):
            return None

    def decision_function(self, matrix: np.ndarray) -> np.ndarray:
        # The same expression as scikit-learn's: numpy promotes the dtypes the same way.
        return matrix @ self.coef_.T + self.intercept_

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        scores = self.decision_function(matrix)
        if scores.shape[1] == 1:
            # scikit-learn uses scipy's expit here: the same up to float64 rounding, but in float32
            # numpy's exp and scipy's differ in the last bit (`_linear_twin` stores no such gate).
            with np.errstate(over="ignore"):
                positive = 1 / (1 + np.exp(-scores[:, 0]))
            proba = np.stack([1 - positive, positive], axis=1)
        else:
            scores -= scores.max(axis=1, keepdims=True)
            np.exp(scores, out=scores)
            proba = scores / scores.sum(axis=1, keepdims=True)
        return proba if self.temperature is None else _tempered(proba, self.temperature)

    def to_bytes(self) -> bytes:
        """An `.npz` archive (no pickles) with fixed entry timestamps: the same model gives the same bytes."""
        arrays = {
            "classes": self.classes_.astype(str),
            "coef": self.coef_,
            "intercept": self.intercept_,
            "temperature": np.array(1.0 if self.temperature is None else self.temperature),
            "tempered": np.array(self.temperature is not None),
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in _LINEAR_ARRAYS:
                with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as entry:
                    np.lib.format.write_array(entry, np.asarray(arrays[name], order="C"), allow_pickle=False)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearGateClassifier:
        """Read `to_bytes`' archive; ValueError when it is not one."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                missing = [name for name in _LINEAR_ARRAYS if name not in archive.files]
                if missing:
                    raise ValueError(f"missing arrays {missing}")
                arrays = {name: archive[name] for name in _LINEAR_ARRAYS}
            tempered = bool(arrays["tempered"])
            temperature = float(arrays["temperature"]) if tempered else None
        except (OSError, zipfile.BadZipFile, EOFError, TypeError) as exc:
            raise ValueError(f"not a linear gate archive: {exc}") from exc
        return cls(arrays["classes"], arrays["coef"], arrays["intercept"], temperature)


def _linear_twin(classifier) -> LinearGateClassifier | None:
    """The numpy twin of `classifier`, if it reproduces its probabilities within `LINEAR_TOLERANCE`.

    Checked on random unit vectors at every save: a scikit-learn release that changed what
    `predict_proba` computes leaves the gate on its joblib file instead of serving other numbers.
    A two-label gate fitted in float32 keeps its joblib file too: its sigmoid is scipy's, which
    numpy reproduces only to float32 precision (about 1e-7), so a probe could pass by luck.
    """
    linear = LinearGateClassifier.from_fitted(classifier)
    if linear is None or (linear.coef_.shape[0] == 1 and linear.coef_.dtype != np.float64):
        return None
    probe = np.random.default_rng(0).standard_normal((16, linear.n_features_in_)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    expected = classifier.predict_proba(probe)
    if expected.shape != (len(probe), len(linear.classes_)) or list(map(str, classifier.classes_)) != list(
            map(str, linear.classes_)):
        return None
    return linear if np.allclose(linear.predict_proba(probe), expected, rtol=0.0, atol=LINEAR_TOLERANCE) else None


def _calibrate(base, oof_proba: np.ndarray | None, y: np.ndarray, seed: int, folds: int,
               calibration: tuple[np.ndarray, np.ndarray] | None):
    """The calibrated classifier and out-of-sample calibrated probabilities to pick thresholds on.

    With a validation set: the temperature is fitted on it, and the probabilities the thresholds
    are chosen on are cross-fitted (each validation case tempered by a temperature fitted without
    it). Without one: the temperature is fitted on the training set's out-of-fold probabilities.
    """
    from sklearn.model_selection import StratifiedKFold

    classes = base.classes_
    if calibration is not None:
        cal_x, cal_y = calibration
        raw = base.predict_proba(cal_x)
        model = TemperatureScaled(base, fit_temperature(raw, cal_y, classes))
        n_splits = min(folds, int(min(np.unique(cal_y, return_counts=True)[1])))
        if n_splits < 2:
            return model, model.predict_proba(cal_x), cal_y, "validation set (in-sample)"
        proba = np.zeros_like(raw)
        for fit_rows, score_rows in StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(
                cal_x, cal_y):
            proba[score_rows] = _tempered(raw[score_rows], fit_temperature(raw[fit_rows], cal_y[fit_rows], classes))
        return model, proba, cal_y, "validation set"
    if oof_proba is None:
        return TemperatureScaled(base, 1.0), np.zeros((0, len(classes))), y[:0], "none (too few examples)"
    temperature = fit_temperature(oof_proba, y, classes)
    return (TemperatureScaled(base, temperature), _tempered(oof_proba, temperature), y,
            "out-of-fold on the training set")


@dataclass
class GateModel:
    """A trained gate: the (calibrated) classifier, its version, thresholds and training metadata."""

    classifier: object
    version: str
    metadata: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.classifier.classes_]

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata.get("embedding_dim") or self.classifier.n_features_in_)

    @property
    def thresholds(self) -> dict[str, float | None]:
        """Per-label thresholds (None: the label never gates); gates stored before them: the global 0.85."""
        stored = self.metadata.get("thresholds")
        if stored:
            return {label: (None if stored.get(label) is None else float(stored[label])) for label in self.labels}
        return {label: DEFAULT_THRESHOLD for label in self.labels}

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        matrix = _as_matrix(embeddings)
        if len(matrix) == 0:
            return np.zeros((0, len(self.labels)))
        if matrix.shape[1] != self.embedding_dim:
            raise ValueError(
                f"gate {self.version} expects {self.embedding_dim}-d embeddings, got {matrix.shape[1]}-d"
            )
        return self.classifier.predict_proba(matrix)

    def predict(self, embeddings: np.ndarray) -> list[GatePrediction]:
        proba = self.predict_proba(embeddings)
        best = proba.argmax(axis=1)
        classes = self.classifier.classes_
        return [GatePrediction(str(classes[i]), float(proba[row, i])) for row, i in enumerate(best)]

    def decide(self, embeddings: np.ndarray, threshold: float | None = None) -> list[GateDecision]:
        """One decision per case: `gated` when the confidence reaches its predicted label's threshold.

        `threshold` overrides the per-label thresholds with one global value (experiments only).
        """
        limits = self.thresholds
        decisions = []
        for p in self.predict(embeddings):
            limit = float(threshold) if threshold is not None else limits.get(p.label)
            decisions.append(GateDecision(p.label, p.confidence, limit is not None and p.confidence >= limit, limit))
        return decisions

    def evaluate(self, embeddings: np.ndarray, labels: Sequence[str], threshold: float | None = None) -> dict:
        """Accuracy, gated share, gated accuracy and ECE on labelled cases (e.g. a golden split)."""
        proba = self.predict_proba(embeddings)
        return labelled_metrics(labels, proba, self.classifier.classes_,
                                self.thresholds if threshold is None else float(threshold))


def train_gate(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    source_description: str,
    seed: int = 0,
    texts_sha256: str | None = None,
    C: float = DEFAULT_C,
    threshold: float = DEFAULT_THRESHOLD,
    cv_folds: int = 5,
    calibration_embeddings: np.ndarray | None = None,
    calibration_labels: Sequence[str] | None = None,
    calibration_sha256: str | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    calibration_method: str = DEFAULT_CALIBRATION_METHOD,
    domain_pack: str | None = None,
) -> GateModel:
    """Fit the gate, calibrate it, choose per-label thresholds for `target_precision`, record the metrics.

    `calibration_embeddings` / `calibration_labels`: a validation set of other phrasings than the
    training set (its labels outside the training labels are dropped); without it calibration and
    thresholds come from cross-validation on the training set. `texts_sha256` (see
    `texts_fingerprint`) versions the model by its training texts, `calibration_sha256` by its
    validation texts; without them the embedding bytes are hashed. The version also changes with
    the thresholds, and with `domain_pack` (the pack's fingerprint: its labels are what the gate
    predicts). `threshold` is only the legacy global threshold the out-of-fold metrics report.
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    matrix = _as_matrix(embeddings)
    y = np.asarray([str(label) for label in labels])
    if len(matrix) != len(y):
        raise ValueError(f"{len(matrix)} embeddings but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("the gate needs examples of at least two labels")
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")

    # lbfgs fits a multinomial model for more than two classes; balanced weights keep a rare
    # label from being absorbed by the frequent ones.
    params = {"C": float(C), "class_weight": "balanced", "max_iter": 2000, "random_state": seed}
    base = LogisticRegression(**params).fit(matrix, y)

    calibration = None
    if calibration_embeddings is not None and calibration_labels is not None and len(calibration_labels):
        cal_x = _as_matrix(calibration_embeddings)
        cal_y = np.asarray([str(label) for label in calibration_labels])
        if len(cal_x) != len(cal_y):
            raise ValueError(f"{len(cal_x)} calibration embeddings but {len(cal_y)} labels")
        known = np.isin(cal_y, base.classes_)
        if len(np.unique(cal_y[known])) == len(base.classes_):  # a calibrator needs every label
            calibration = (cal_x[known], cal_y[known])
    if calibration_method != "temperature":
        raise ValueError(f"unsupported calibration method {calibration_method!r} (only 'temperature')")
    oof_proba = _out_of_fold_proba(matrix, y, params, seed, cv_folds)
    classifier, held_proba, held_y, calibration_source = _calibrate(base, oof_proba, y, seed, cv_folds, calibration)
    classes = classifier.classes_
    thresholds = per_label_thresholds(held_y, held_proba, classes, target_precision)
    uncalibrated = (base.predict_proba(calibration[0]), calibration[1]) if calibration else None

    data_fingerprint = texts_sha256 or hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()
    calibration_fingerprint = None
    if calibration is not None:
        calibration_fingerprint = calibration_sha256 or hashlib.sha256(
            np.ascontiguousarray(calibration[0]).tobytes()).hexdigest()
    version = _gate_version(data_fingerprint, list(y), {
        **params, "calibration": calibration_method, "calibration_data": calibration_fingerprint,
        "target_precision": target_precision, "thresholds": thresholds,
        **({"domain_pack": domain_pack} if domain_pack else {}),
    }, sklearn.__version__)
    labels_sorted, counts = np.unique(y, return_counts=True)
    metadata = {
        "format": FORMAT,
        "version": version,
        "trained_at": datetime.now(timezone.utc).isoformat(),
        "source_description": source_description,
        "n_examples": int(len(y)),
        "label_counts": {str(lab): int(n) for lab, n in zip(labels_sorted, counts)},
        "embedding_dim": int(matrix.shape[1]),
        "params": params,
        "sklearn_version": sklearn.__version__,
        "data_fingerprint": data_fingerprint,
        "data_fingerprint_kind": "texts_sha256" if texts_sha256 else "embeddings_sha256",
        "target_precision": target_precision,
        "thresholds": thresholds,
        "calibration": {
            "method": calibration_method,
            "temperature": classifier.temperature,
            "source": calibration_source,
            "n": int(len(held_y)),
            "data_fingerprint": calibration_fingerprint,
            # Out-of-sample: each case scored by a calibrator that never saw it.
            **{k: v for k, v in labelled_metrics(held_y, held_proba, classes, thresholds).items()
               if k != "per_label_accuracy"},
            "ece_uncalibrated": (round(expected_calibration_error(
                uncalibrated[0].max(axis=1), base.classes_[uncalibrated[0].argmax(axis=1)] == uncalibrated[1]), 4)
                if uncalibrated else None),
        },
        # Uncalibrated out-of-fold scores at the legacy global threshold: what training data alone says.
        "cross_validation": None if oof_proba is None else {
            "folds": min(cv_folds, int(counts.min())), "threshold": threshold,
            **labelled_metrics(y, oof_proba, labels_sorted, threshold)},
    }
    return GateModel(classifier=classifier, version=version, metadata=metadata)


def gate_folder(version: str) -> str:
    """The artifact-store folder of one gate version: `models/embedding_gate/<version>`."""
    return f"{ARTIFACT_PREFIX}/{version}"


def stored_gate_versions(store: ArtifactStore) -> list[str]:
    """Every gate version saved in `store` (a folder with its training.json: a whole save)."""
    suffix = f"/{METADATA_FILE}"
    return sorted({path[len(ARTIFACT_PREFIX) + 1:-len(suffix)] for path in store.list(ARTIFACT_PREFIX)
                   if path.endswith(suffix) and path.startswith(f"{ARTIFACT_PREFIX}/")})


def save_gate(model: GateModel, store: ArtifactStore) -> str:
    """Store the gate under `models/embedding_gate/<version>/` in `store`; returns that folder's path.

    The model file is named by its sha256 (`model-<sha256[:16]>.joblib`) and the full sha256
    goes into training.json, written last: a reader never pairs a new training.json with an
    old model file, and `load_gate` refuses a file that no longer matches (joblib files are
    pickles: never unpickle an unchecked one). A logistic-regression gate also gets its arrays
    as `linear-<sha256[:16]>.npz` (sha256 in training.json too), which `load_gate` serves from
    without importing scikit-learn.
    """
    import joblib

    folder = gate_folder(model.version)
    buffer = io.BytesIO()
    joblib.dump(model.classifier, buffer)
    model_bytes = buffer.getvalue()
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    model_file = f"model-{model_sha[:16]}.joblib"
    store.write_bytes(f"{folder}/{model_file}", model_bytes)
    metadata = {key: value for key, value in model.metadata.items()
                if key not in ("linear_file", "linear_sha256", "linear_format")}
    metadata.update({"version": model.version, "model_file": model_file, "model_sha256": model_sha})
    linear = _linear_twin(model.classifier)
    if linear is not None:
        linear_bytes = linear.to_bytes()
        linear_sha = hashlib.sha256(linear_bytes).hexdigest()
        linear_file = f"linear-{linear_sha[:16]}.npz"
        store.write_bytes(f"{folder}/{linear_file}", linear_bytes)
        metadata.update({"linear_file": linear_file, "linear_sha256": linear_sha, "linear_format": LINEAR_FORMAT})
    # training.json last: a folder without it is an interrupted save and is never loaded.
    store.write_bytes(f"{folder}/{METADATA_FILE}", (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    model.metadata = metadata
    return folder


def _checked_file(store: ArtifactStore, folder: str, metadata: dict, name_key: str, sha_key: str) -> bytes:
    """The bytes of the file training.json names under `name_key`, if they match its sha256 under `sha_key`."""
    metadata_path = f"{folder}/{METADATA_FILE}"
    file_name = str(metadata.get(name_key) or "")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", file_name) or file_name.startswith("."):
        raise GateIntegrityError(f"{store.uri(metadata_path)} names no valid {name_key} ({file_name!r})")
    path = f"{folder}/{file_name}"
    try:
        data = store.read_bytes(path)
    except FileNotFoundError as exc:
        raise GateNotFound(f"gate model file {store.uri(path)} is missing") from exc
    expected = metadata.get(sha_key)
    actual = hashlib.sha256(data).hexdigest()
    if not expected or actual != expected:
        raise GateIntegrityError(
            f"gate model file {store.uri(path)} was modified after it was saved: sha256 {actual} does not "
            f"match {expected} recorded in {METADATA_FILE}; refusing to load it (retrain or restore the file)"
        )
    return data


def load_gate(store: ArtifactStore, version: str) -> GateModel:
    """Load exactly gate `version` from `store`, checking its model file's sha256 before reading it.

    Serves from the numpy arrays when training.json names them (no scikit-learn import); gates
    saved before them load their joblib classifier.
    """
    folder = gate_folder(version)
    metadata_path = f"{folder}/{METADATA_FILE}"
    try:
        raw = store.read_bytes(metadata_path)
    except FileNotFoundError as exc:
        raise GateNotFound(f"no gate {version} at {store.uri(folder)} ({METADATA_FILE} missing)") from exc
    try:
        metadata = json.loads(raw)
    except ValueError as exc:
        raise GateIntegrityError(f"gate metadata {store.uri(metadata_path)} is unreadable: {exc}") from exc
    if str(metadata.get("version")) != version:
        raise GateIntegrityError(f"{store.uri(metadata_path)} describes gate {metadata.get('version')!r}, "
                                 f"not {version!r}")
    # A linear format this code does not know (a newer writer) falls back to the joblib file.
    if metadata.get("linear_file") and metadata.get("linear_format") == LINEAR_FORMAT:
        linear_bytes = _checked_file(store, folder, metadata, "linear_file", "linear_sha256")
        try:
            classifier = LinearGateClassifier.from_bytes(linear_bytes)
        except ValueError as exc:
            raise GateIntegrityError(f"gate arrays {store.uri(folder)}/{metadata['linear_file']} are unreadable: "
                                     f"{exc}") from exc
        return GateModel(classifier=classifier, version=version, metadata=metadata)
    import joblib

    model_bytes = _checked_file(store, folder, metadata, "model_file", "model_sha256")
    classifier = joblib.load(io.BytesIO(model_bytes))
    return GateModel(classifier=classifier, version=version, metadata=metadata)
