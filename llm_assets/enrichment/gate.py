"""The embedding gate: decides when a case can skip the LLM call.

A multinomial logistic regression over normalized sentence embeddings (384-d, from the
packaged all-MiniLM-L6-v2) predicts the case label with a confidence. A case whose
confidence reaches the threshold (default 0.85) takes the `gate` route; the rest go to
the LLM. This module owns training (with out-of-fold metrics as training metadata),
prediction, and versioned, integrity-checked storage of the model. Pure logic: no
Dagster and no embedding-model import (callers pass embeddings in).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from llm_assets.storage.files import atomic_write_bytes

DEFAULT_THRESHOLD = 0.85
# C=10 measured on the sample KB: out-of-fold and golden accuracy stay ~1.0 while the share
# of golden cases above 0.85 goes from 0.18 (C=1) to ~0.97; see tests/enrichment/test_gate.py.
DEFAULT_C = 10.0
MODEL_FILE = "model.joblib"
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_gate(model: GateModel, directory: str | Path) -> Path:
    """Store the gate under `<directory>/<version>/` (model.joblib + training.json); returns that folder.

    The joblib file's sha256 goes into training.json, and `load_gate` refuses a file that
    no longer matches it (joblib files are pickles: never unpickle an unchecked one).
    """
    import joblib

    folder = Path(directory) / model.version
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MODEL_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        joblib.dump(model.classifier, tmp)
        model_sha = _sha256_file(Path(tmp))
        os.replace(tmp, model_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    metadata = {**model.metadata, "version": model.version, "model_file": MODEL_FILE, "model_sha256": model_sha}
    # training.json last: a folder without it is an interrupted save and is never loaded.
    atomic_write_bytes(folder / METADATA_FILE, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    model.metadata = metadata
    return folder


def load_gate(path: str | Path) -> GateModel:
    """Load a gate from its version folder (or its `model.joblib` / `training.json`), checking integrity."""
    import joblib

    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    metadata_path = folder / METADATA_FILE
    if not metadata_path.is_file():
        raise GateNotFound(f"no gate model at {folder} ({METADATA_FILE} missing)")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as exc:
        raise GateIntegrityError(f"gate metadata {metadata_path} is unreadable: {exc}") from exc
    model_path = folder / metadata.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        raise GateNotFound(f"gate model file {model_path} is missing")
    expected = metadata.get("model_sha256")
    actual = _sha256_file(model_path)
    if not expected or actual != expected:
        raise GateIntegrityError(
            f"gate model file {model_path} was modified after it was saved: sha256 {actual} does not match "
            f"{expected} recorded in {metadata_path}; refusing to load it (retrain or restore the file)"
        )
    classifier = joblib.load(model_path)
    return GateModel(classifier=classifier, version=str(metadata["version"]), metadata=metadata)


def list_gates(directory: str | Path) -> list[dict]:
    """Metadata of every completely saved gate under `directory`, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for metadata_path in root.glob(f"*/{METADATA_FILE}"):
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, ValueError):
            continue
        found.append({**metadata, "path": str(metadata_path.parent)})
    return sorted(found, key=lambda m: (m.get("trained_at", ""), m.get("version", "")))


def load_latest_gate(directory: str | Path) -> GateModel:
    """The most recently trained gate saved under `directory`; `GateNotFound` when there is none."""
    gates = list_gates(directory)
    if not gates:
        raise GateNotFound(f"no gate model saved under {directory}")
    return load_gate(gates[-1]["path"])
