"""The embedding gate: decides when a case can skip the LLM call.

A multinomial logistic regression over normalized sentence embeddings (384-d, from the
packaged all-MiniLM-L6-v2) predicts the case label with a confidence. A case whose
confidence reaches the threshold (default 0.85) takes the `gate` route; the rest go to
the LLM. This module owns training (with out-of-fold metrics as training metadata),
prediction, and versioned, integrity-checked storage of the model in the artifact store
(`models/embedding_gate/<version>/`). Pure logic: no Dagster and no embedding-model import
(callers pass embeddings and the store in).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    from llm_assets.resources.artifacts import ArtifactStore

DEFAULT_THRESHOLD = 0.85
# C=10 measured on the sample KB: out-of-fold and golden accuracy stay ~1.0 while the share
# of golden cases above 0.85 goes from 0.18 (C=1) to ~0.97; see tests/enrichment/test_gate.py.
DEFAULT_C = 10.0
ARTIFACT_PREFIX = "models/embedding_gate"
METADATA_FILE = "training.json"
FORMAT = "llm-assets-gate/1"

_RESOLVED_PREFIX = re.compile(r"^Resolved case \([^)]*\):\s*")
_RESOLUTION_SUFFIX = " Resolution: "


class GatePrediction(NamedTuple):
    label: str
    confidence: float


class GateDecision(NamedTuple):
    label: str
    confidence: float
    gated: bool  # True: confident enough to skip the LLM


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


def _threshold_metrics(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, threshold: float) -> dict:
    predicted = classes[proba.argmax(axis=1)]
    confidence = proba.max(axis=1)
    gated = confidence >= threshold
    correct = predicted == y_true
    return {
        "accuracy": round(float(correct.mean()), 4),
        "threshold": threshold,
        "gated_share": round(float(gated.mean()), 4),
        "gated_accuracy": round(float(correct[gated].mean()), 4) if gated.any() else None,
        "per_label_accuracy": {
            str(lab): round(float(correct[y_true == lab].mean()), 4) for lab in classes
        },
    }


def _cross_validated_metrics(
    matrix: np.ndarray, y: np.ndarray, params: dict, seed: int, threshold: float, folds: int
) -> dict | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_splits = min(folds, int(min(np.unique(y, return_counts=True)[1])))
    if n_splits < 2:
        return None  # a label with a single example: no honest out-of-fold estimate
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(**params), matrix, y, cv=splitter, method="predict_proba")
    metrics = _threshold_metrics(y, proba, np.unique(y), threshold)
    return {"folds": n_splits, **metrics}


@dataclass
class GateModel:
    """A trained gate: the classifier, its version and its training metadata."""

    classifier: object
    version: str
    metadata: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.classifier.classes_]

    @property
    def embedding_dim(self) -> int:
        return int(self.classifier.n_features_in_)

    def predict(self, embeddings: np.ndarray) -> list[GatePrediction]:
        matrix = _as_matrix(embeddings)
        if len(matrix) == 0:
            return []
        if matrix.shape[1] != self.embedding_dim:
            raise ValueError(
                f"gate {self.version} expects {self.embedding_dim}-d embeddings, got {matrix.shape[1]}-d"
            )
        proba = self.classifier.predict_proba(matrix)
        best = proba.argmax(axis=1)
        classes = self.classifier.classes_
        return [GatePrediction(str(classes[i]), float(proba[row, i])) for row, i in enumerate(best)]

    def decide(self, embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[GateDecision]:
        """One decision per case: `gated` when the confidence reaches `threshold`."""
        return [GateDecision(p.label, p.confidence, p.confidence >= threshold) for p in self.predict(embeddings)]


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
) -> GateModel:
    """Fit the gate and record out-of-fold metrics at `threshold` in its metadata.

    `texts_sha256` (see `texts_fingerprint`) versions the model by its training texts;
    without it the embedding bytes are hashed, so a new embedding model is a new version.
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    matrix = _as_matrix(embeddings)
    y = np.asarray([str(label) for label in labels])
    if len(matrix) != len(y):
        raise ValueError(f"{len(matrix)} embeddings but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("the gate needs examples of at least two labels")

    # lbfgs fits a multinomial model for more than two classes; balanced weights keep a rare
    # label from being absorbed by the frequent ones.
    params = {"C": float(C), "class_weight": "balanced", "max_iter": 2000, "random_state": seed}
    classifier = LogisticRegression(**params).fit(matrix, y)

    data_fingerprint = texts_sha256 or hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()
    version = _gate_version(data_fingerprint, list(y), params, sklearn.__version__)
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
        "cross_validation": _cross_validated_metrics(matrix, y, params, seed, threshold, cv_folds),
    }
    return GateModel(classifier=classifier, version=version, metadata=metadata)


def gate_folder(version: str) -> str:
    """The artifact-store folder of one gate version: `models/embedding_gate/<version>`."""
    return f"{ARTIFACT_PREFIX}/{version}"


def save_gate(model: GateModel, store: ArtifactStore) -> str:
    """Store the gate under `models/embedding_gate/<version>/` in `store`; returns that folder's path.

    The model file is named by its sha256 (`model-<sha256[:16]>.joblib`) and the full sha256
    goes into training.json, written last: a reader never pairs a new training.json with an
    old model file, and `load_gate` refuses a file that no longer matches (joblib files are
    pickles: never unpickle an unchecked one).
    """
    import joblib

    buffer = io.BytesIO()
    joblib.dump(model.classifier, buffer)
    model_bytes = buffer.getvalue()
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    model_file = f"model-{model_sha[:16]}.joblib"
    folder = gate_folder(model.version)
    store.write_bytes(f"{folder}/{model_file}", model_bytes)
    metadata = {**model.metadata, "version": model.version, "model_file": model_file, "model_sha256": model_sha}
    # training.json last: a folder without it is an interrupted save and is never loaded.
    store.write_bytes(f"{folder}/{METADATA_FILE}", (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    model.metadata = metadata
    return folder


def load_gate(store: ArtifactStore, version: str) -> GateModel:
    """Load exactly gate `version` from `store`, checking the model file's sha256 before unpickling it."""
    import joblib

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
    model_file = str(metadata.get("model_file") or "")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", model_file) or model_file.startswith("."):
        raise GateIntegrityError(f"{store.uri(metadata_path)} names no valid model file ({model_file!r})")
    model_path = f"{folder}/{model_file}"
    try:
        model_bytes = store.read_bytes(model_path)
    except FileNotFoundError as exc:
        raise GateNotFound(f"gate model file {store.uri(model_path)} is missing") from exc
    expected = metadata.get("model_sha256")
    actual = hashlib.sha256(model_bytes).hexdigest()
    if not expected or actual != expected:
        raise GateIntegrityError(
            f"gate model file {store.uri(model_path)} was modified after it was saved: sha256 {actual} does not "
            f"match {expected} recorded in {METADATA_FILE}; refusing to load it (retrain or restore the file)"
        )
    classifier = joblib.load(io.BytesIO(model_bytes))
    return GateModel(classifier=classifier, version=version, metadata=metadata)
