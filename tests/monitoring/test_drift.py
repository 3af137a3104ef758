"""Drift statistics on generated cases: rare false alarms, and the shifts they exist for are found.

The embeddings of every text are computed once for the module (the packaged model); each
test draws its windows from them.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from llm_assets.domain import current_pack
from llm_assets.lib.redaction import redact
from llm_assets.monitoring import drift
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import case_text

pytestmark = pytest.mark.integration

POOL = 300
WINDOW = 100
SEEDS = 40

# A product the reference window never saw: the same labels, about something else.
NEW_TOPIC_TEMPLATES = (
    "The buy-now-pay-later provider charged the {n}th instalment twice for order {ref}; customer {email} wants "
    "the duplicate instalment reversed.",
    "Crypto wallet top-up of {amount} EUR is stuck in pending at the exchange for {n} hours; ticket opened by {phone}.",
    "Loyalty points for order {ref} were converted to airline miles at the wrong rate; {n} points are missing.",
    "The marketplace seller payout for listing {ref} was split across {n} wallets after the app update.",
    "Subscription box delivery {ref} was paused but the monthly fee of {amount} EUR kept being collected.",
)


@pytest.fixture(scope="module")
def pool():
    """Same-distribution cases (redacted texts, labels, confidences) and new-topic texts, embedded once."""
    rng = random.Random(5)
    cases = [case_text(rng) for _ in range(POOL)]
    texts = [redact(c.text).text for c in cases]
    labels = [c.label for c in cases]
    confidence = np.round(np.random.default_rng(5).beta(8, 2, POOL), 3)
    new_topic = [t.format(n=rng.randint(2, 12), ref=f"REF-{rng.randint(100000, 999999)}", amount=f"{rng.uniform(10, 900):.2f}",
                          email="<EMAIL>", phone="<PHONE>") for t in NEW_TOPIC_TEMPLATES for _ in range(12)]
    vectors = EmbedderResource().encode(texts + new_topic)
    return {"embeddings": vectors[:POOL], "labels": labels, "confidence": confidence,
            "new_topic": vectors[POOL:]}


def _report(pool, reference: np.ndarray, current: np.ndarray, *, current_embeddings=None, current_labels=None,
            current_confidence=None) -> drift.DriftReport:
    return drift.drift_report(
        reference_embeddings=pool["embeddings"][reference],
        current_embeddings=pool["embeddings"][current] if current_embeddings is None else current_embeddings,
        reference_labels=[pool["labels"][i] for i in reference],
        current_labels=[pool["labels"][i] for i in current] if current_labels is None else current_labels,
        reference_confidence=pool["confidence"][reference],
        current_confidence=pool["confidence"][current] if current_confidence is None else current_confidence,
        categories=current_pack().labels)


def _windows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(POOL)
    return order[:WINDOW], order[WINDOW:2 * WINDOW]


def test_windows_from_one_distribution_rarely_alarm(pool):
    alarms = {}
    for seed in range(SEEDS):
        report = _report(pool, *_windows(seed))
        assert report.embedding is not None and report.embedding.threshold_kind == "bootstrap"
        if report.drifted:
            alarms[seed] = report.drifted_parts()
    assert len(alarms) / SEEDS <= 0.05, alarms


def test_a_shifted_label_mix_is_detected(pool):
    reference, _ = _windows(1)
    rest = np.setdiff1d(np.arange(POOL), reference)
    fraud = [i for i in rest if pool["labels"][i] == "fraud_suspected"]
    others = [i for i in rest if pool["labels"][i] != "fraud_suspected"]
    current = np.array(fraud[:45] + others[:35])  # fraud from about 20% to over half of the cases
    report = _report(pool, reference, current)
    assert report.label_mix.drifted and report.drifted
    assert report.label_mix.current_shares["fraud_suspected"] > 0.5
    assert report.label_mix.psi > drift.PSI_THRESHOLD and report.label_mix.js_distance > drift.JS_THRESHOLD


def test_a_topic_shift_in_the_texts_is_detected_by_the_embeddings(pool):
    reference, current = _windows(2)
    # Half the current cases are about a new product; labels and confidences stay as they were.
    shifted = np.vstack([pool["embeddings"][current[: WINDOW // 2]], pool["new_topic"][: WINDOW // 2]])
    report = _report(pool, reference, current, current_embeddings=shifted)
    assert report.embedding.drifted and report.embedding.roc_auc > 0.7
    assert not report.label_mix.drifted and not report.confidence.drifted
    assert report.drifted_parts() == ["embedding"]
    same = _report(pool, reference, current)
    assert report.embedding.mean_distance > 2 * same.embedding.mean_distance


def test_a_confidence_shift_is_detected(pool):
    reference, current = _windows(3)
    lower = np.clip(pool["confidence"][current] - 0.15, 0, 1)
    report = _report(pool, reference, current, current_confidence=lower)
    assert report.confidence.drifted and report.confidence.p_value < drift.KS_ALPHA
    assert report.drifted_parts() == ["confidence"]


def test_large_windows_use_the_fixed_auc_threshold(pool):
    rng = np.random.default_rng(0)
    big = drift.embedding_drift(rng.normal(size=(1100, 8)), rng.normal(size=(1100, 8)))
    assert big.threshold_kind == "fixed" and big.threshold == drift.AUC_THRESHOLD and not big.drifted


def test_too_few_cases_are_reported_not_judged():
    report = drift.drift_report(reference_embeddings=None, current_embeddings=None, reference_labels=["other"] * 3,
                                current_labels=["other"] * 50, reference_confidence=[0.9] * 3,
                                current_confidence=[0.9] * 50)
    assert not report.drifted and report.metric_rows() == [] and "too few" in report.notes[0]
