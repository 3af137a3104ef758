"""Distillation: which LLM answers become gate training examples, analyst overrides, provenance, no
clear PII, the retraining sensor, and the held-out guard that keeps a worse gate from serving.

Real Delta tables in tmp folders and the packaged embedding model; no LLM is needed (the enriched
rows an LLM would have written are written directly)."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import (
    CURATED_CASES,
    EMBEDDING_GATE,
    ENRICHED_CASES,
    EVALUATION_RATINGS,
    GATE_TRAINING_EXAMPLES,
)
from llm_assets.gate import distillation
from llm_assets.gate import examples as ex
from llm_assets.gate.retraining import GatedScore, judge, training_rows
from llm_assets.gate import assets as gate_assets
from llm_assets.domain import current_pack
from llm_assets.knowledge_base import assets as kb_assets
from llm_assets.lib.redaction import find_pii
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data, golden_cases
from tests.support.pipeline import artifact_resources

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 18, 9, 0, tzinfo=timezone.utc)
CARD, EMAIL = "4111 1111 1111 1111", "Jane.Doe+ops@Example.com"


def _enriched(event_id: str, label: str = "fraud_suspected", *, confidence: float = 0.93, route: str = "llm",
              minutes: int = 0, **overrides) -> dict:
    row = {"event_id": event_id, "event_date": "2026-11-18", "label": label, "confidence": confidence,
           "severity": current_pack().severity_for(label), "actions": json.dumps(current_pack().actions_for(label)),
           "route": route, "fallback_reason": None, "model_version": "server:qwen2.5-7b@2026-11",
           "prompt_version": "enrich@v3", "gate_version": "gate0001", "enriched_at": T0 + timedelta(minutes=minutes)}
    return {**row, **overrides}


def _rating(event_id: str, label_correct: bool, correct_label: str | None = None, minutes: int = 60,
            analyst: str = "ana", model_label: str = "fraud_suspected") -> dict:
    """An `evaluation/ratings` row: `label` is the right label as the analyst sees it."""
    return {"event_id": event_id, "label_correct": label_correct, "correct_label": correct_label,
            "label": model_label if label_correct else correct_label, "model_label": model_label,
            "analyst": analyst, "rated_at": T0 + timedelta(minutes=minutes)}


def _texts(n: int) -> dict[str, str]:
    return {f"e{i}": f"Card {CARD} used in {i + 3} countries within ten minutes; customer {EMAIL} unreachable."
            for i in range(n)}


def _select(rows: list[dict], ratings: list[dict] = (), texts: dict | None = None, **kwargs) -> ex.Selection:
    return ex.select_examples(pl.DataFrame(rows), texts if texts is not None else _texts(20),
                              pl.DataFrame(list(ratings)) if ratings else pl.DataFrame(), now=T0, **kwargs)


def test_only_confident_valid_llm_answers_become_examples():
    rows = [_enriched("e0"),
            _enriched("e1", route="gate"), _enriched("e2", route="local"),
            _enriched("e3", route="fallback", fallback_reason="timeout: no answer"),
            _enriched("e4", confidence=0.5),
            _enriched("e5", label="not_a_label"), _enriched("e6", confidence=1.7),
            _enriched("e7", actions=json.dumps([{"action": "delete_account", "reason": "x", "approval_level": "analyst"}])),
            _enriched("e8", severity=9), _enriched("e9", actions="not json")]

    selection = _select(rows)

    assert selection.examples["event_id"].to_list() == ["e0"]
    assert selection.candidates == 7  # gate, local and fallback rows are no LLM answers
    assert selection.rejected == {"low_confidence": 1, "invalid_label": 1, "invalid_confidence": 1,
                                  "invalid_actions": 2, "invalid_severity": 1}
    assert _select([_enriched("e4", confidence=0.5)], min_confidence=0.4).examples.height == 1


def test_ratings_are_weighed_one_analyst_cannot_flip_a_confident_answer_alone():
    rows = [_enriched("e0"), _enriched("e1"), _enriched("e2", confidence=0.6), _enriched("e3", confidence=0.6),
            _enriched("e4")]
    ratings = [
        _rating("e0", False, "routing_error"), _rating("e0", False, "routing_error", 61, "bo"),  # two agree
        _rating("e1", False, "routing_error"),                   # one analyst against a confident answer: review
        _rating("e2", False, "other"),                           # one analyst against an unsure answer: decides
        _rating("e3", True),                                     # a confirmed answer counts even if unsure
        _rating("e4", False, "other"), _rating("e4", True, minutes=90, analyst="bo"),  # a tie: review
    ]

    selection = _select(rows, ratings)

    got = {r["event_id"]: (r["label"], r["label_source"], r["analyst"]) for r in selection.examples.to_dicts()}
    assert got == {"e0": ("routing_error", "analyst", "bo"), "e2": ("other", "analyst", "ana"),
                   "e3": ("fraud_suspected", "llm", "ana")}
    assert selection.in_review == ["e1", "e4"] and selection.rejected["in_review"] == 2
    assert (selection.overridden, selection.confirmed) == (2, 1)
    corrected = selection.examples.filter(pl.col("event_id") == "e0").row(0, named=True)
    assert corrected["llm_label"] == "fraud_suspected"  # what the LLM said stays on record

    # Without the defences, the latest rating is obeyed (what the poisoning benchmark compares with).
    obeyed = _select(rows, ratings, defences=False)
    assert dict(obeyed.examples.select("event_id", "label").rows())["e1"] == "routing_error"


def test_a_quarantined_analyst_teaches_nothing_until_released():
    rows = [_enriched(f"e{i}") for i in range(12)]
    # One account calls every confident fraud answer a routing error, with a second account echoing it on two.
    ratings = [_rating(f"e{i}", False, "routing_error", analyst="mallory") for i in range(12)]

    selection = _select(rows, ratings)

    assert selection.quarantined == ["mallory"]
    assert set(selection.examples["label"]) == {"fraud_suspected"}  # the LLM's labels, untouched
    assert selection.examples.height == 12 and selection.overridden == 0
    # A reviewer released mallory after the ratings: they are trusted again, but one voice still cannot flip
    # a confident answer; the cases wait for a second analyst.
    released = _select(rows, ratings, released={"mallory": T0 + timedelta(hours=2)})
    assert released.quarantined == [] and len(released.in_review) == 12


def test_injected_cases_and_answers_that_overrule_a_confident_gate_teach_nothing():
    rows = [_enriched("e0", injection_suspected=True),
            _enriched("e1", gate_label="routing_error", gate_confidence=0.96),   # the LLM contradicts a sure gate
            _enriched("e2", gate_label="routing_error", gate_confidence=0.55),   # an unsure gate: the LLM teaches
            _enriched("e3", gate_label="routing_error", gate_confidence=0.96)]   # contradicted, but rated
    ratings = [_rating("e3", True), _rating("e3", True, analyst="bo")]

    selection = _select(rows, ratings)

    assert sorted(selection.examples["event_id"]) == ["e2", "e3"]
    assert selection.rejected["injection_suspected"] == 1 and selection.injections == ["e0"]
    assert selection.rejected["contradicts_a_confident_gate"] == 1
    assert sorted(_select(rows, defences=False).examples["event_id"]) == ["e0", "e1", "e2", "e3"]


def test_examples_keep_provenance_and_only_redacted_text():
    texts = {"e0": f"Refund to card {CARD} requested by {EMAIL}; phone (212) 555-0134 x12, IBAN DE89 3704 0044 0532 0130 00."}
    selection = _select([_enriched("e0")], texts=texts)

    row = selection.examples.row(0, named=True)
    assert (row["event_id"], row["event_date"], row["model_version"], row["prompt_version"], row["gate_version"]) == (
        "e0", "2026-11-18", "server:qwen2.5-7b@2026-11", "enrich@v3", "gate0001")
    assert row["llm_confidence"] == 0.93 and row["enriched_at"] == T0 and row["distilled_at"] == T0
    assert row["example_id"] == ex.text_sha256(row["text"])
    for clear in (CARD, "4111111111111111", EMAIL.lower(), "555-0134", "DE89", "2125550134"):
        assert clear.lower() not in row["text"].lower()
    assert all(p in row["text"] for p in ("<CARD>", "<EMAIL>", "<PHONE>", "<IBAN>"))
    assert not find_pii(row["text"])


def test_a_text_the_redactor_still_flags_is_never_stored():
    # A redactor that misses the email stands for one that misses anything: the example is dropped.
    selection = _select([_enriched("e0")], texts={"e0": f"Contact {EMAIL} today."}, redact_text=lambda t: t)
    assert selection.examples.is_empty() and selection.rejected["empty_or_pii_text"] == 1


def test_one_example_per_text_the_analyst_label_first_then_the_latest_answer():
    same = {"e0": "Payout to a new beneficiary blocked.", "e1": "Payout to a new beneficiary blocked.",
            "e2": "Payout to a new beneficiary blocked."}
    rows = [_enriched("e0", minutes=1), _enriched("e1", label="other", minutes=5), _enriched("e2", minutes=3)]
    assert _select(rows, texts=same).examples["event_id"].to_list() == ["e1"]
    selection = _select(rows, [_rating("e0", False, "partner_mismatch"),
                               _rating("e0", False, "partner_mismatch", analyst="bo")], texts=same)
    assert selection.examples.select("event_id", "label").rows() == [("e0", "partner_mismatch")]
    assert selection.rejected["duplicate_text"] == 2


def test_distilled_at_and_new_examples_count_what_the_gate_has_not_seen():
    first = _select([_enriched("e0"), _enriched("e1")]).examples
    later = ex.select_examples(pl.DataFrame([_enriched("e0"), _enriched("e1"), _enriched("e2")]), _texts(5),
                               pl.DataFrame([_rating("e1", False, "other"), _rating("e1", False, "other", analyst="bo")]),
                               now=T0 + timedelta(days=1)).examples
    kept = ex.keep_first_distilled_at(later, first)
    by_id = {r["event_id"]: r["distilled_at"] for r in kept.to_dicts()}
    assert by_id == {"e0": T0, "e1": T0 + timedelta(days=1), "e2": T0 + timedelta(days=1)}  # e1 relabelled
    assert ex.new_examples(kept, first) == 2 and ex.new_examples(kept, None) == 3
    assert ex.examples_version(kept) == ex.examples_version(kept.reverse())
    assert ex.examples_version(kept) != ex.examples_version(first)


def test_training_rows_count_a_rated_distilled_case_once():
    distilled = _select([_enriched("e0"), _enriched("e1")]).examples
    ratings = pl.DataFrame([{**_rating("e0", True, model_label="other"), "text": "x"},
                            {**_rating("r9", True, model_label="other"), "text": "rated elsewhere"},
                            # one analyst's dispute of the model: not taught until a second one agrees
                            {**_rating("r8", False, "other", model_label="routing_error"), "text": "disputed"}])
    resolved, extra, counts = training_rows([{"label": "other", "content": "Resolved case (other): y"}], ratings, distilled)
    assert counts == {"kb_resolved_cases": 1, "analyst_ratings": 1, "distilled_examples": 2}
    assert ("rated elsewhere", "other") in extra and len(extra) == 3


def test_the_guard_rejects_a_candidate_that_loses_gated_accuracy():
    serving = GatedScore(cases=200, gated=100, correct=99)
    assert not judge(GatedScore(200, 160, 150), serving).accepted  # more cases gated, but below 0.95
    assert judge(GatedScore(200, 160, 158), serving).accepted      # 0.9875 vs 0.99: within what 200 cases resolve
    assert judge(GatedScore(200, 160, 158), GatedScore(200, 63, 63)).accepted  # a perfect 63/63 is no wall
    lower = judge(GatedScore(200, 160, 154), GatedScore(200, 100, 100))
    assert not lower.accepted and "significantly lower" in lower.reason  # 0.9625 vs 1.00 on 100: a real loss
    assert judge(GatedScore(200, 0, 0), serving).accepted           # gates nothing: nothing lost
    assert judge(GatedScore(200, 50, 40), None).accepted             # nothing serves yet
    assert "0.9900" in judge(GatedScore(200, 160, 150), serving).reason


def test_the_sensor_retrains_once_enough_new_examples_arrived_and_not_twice_for_the_same_ones():
    instance = dg.DagsterInstance.ephemeral()

    def report(key, **metadata):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))

    assert "not been materialized" in _sensor(instance, min_new=10).skip_message
    report(EMBEDDING_GATE, gate_version="g1")
    report(GATE_TRAINING_EXAMPLES, new_examples_since_gate=9)
    assert "9 new training examples" in _sensor(instance, min_new=10).skip_message
    report(GATE_TRAINING_EXAMPLES, new_examples_since_gate=12)
    first = _sensor(instance, min_new=10)
    assert isinstance(first, dg.RunRequest) and first.asset_selection == [EMBEDDING_GATE]
    assert _sensor(instance, min_new=10).run_key == first.run_key  # the same examples: one run key, one run
    report(EMBEDDING_GATE, gate_version="g2")  # the gate considered them (kept or replaced)
    assert "already considered" in _sensor(instance, min_new=10).skip_message


# -- through Dagster: the asset, the sensor, the gate's guard -----------------------------------------

@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_ASSETS_HOME", str(root))
        mp.setenv("SAMPLE_DATA_DIR", str(root / "sample_data"))
        generate_sample_data(root / "sample_data", n_events=20, days=1)
        resources = {"delta": DeltaLakeStorage(root=str(root / "delta")), "embedder": EmbedderResource(),
                     **artifact_resources(root)}
        instance = dg.DagsterInstance.ephemeral()
        _materialize(resources, instance, "kb/documents")
        _materialize(resources, instance, "models/embedding_gate")
        yield root, resources, instance


def _write_cases(delta: DeltaLakeStorage, cases: list[dict], labels: list[str]) -> None:
    curated = pl.DataFrame({"event_id": [c["event_id"] for c in cases], "event_date": ["2026-11-18"] * len(cases),
                            "payload_raw": [c["payload_raw"] for c in cases]})
    enriched = pl.DataFrame([_enriched(c["event_id"], label, minutes=i) for i, (c, label) in
                             enumerate(zip(cases, labels))]).with_columns(pl.col("fallback_reason").cast(pl.String))
    delta.overwrite(CURATED_CASES, curated)
    delta.overwrite(ENRICHED_CASES, enriched)


def _materialize(resources, instance, key: str):
    """One asset of kb/documents -> models/gate_training_examples -> models/embedding_gate, in-process."""
    assets = [kb_assets.kb_documents, gate_assets.embedding_gate, distillation.gate_training_examples]
    result = dg.materialize(assets, selection=[dg.AssetKey.from_user_string(key)], resources=resources,
                            instance=instance, raise_on_error=False)
    assert result.success
    return result.asset_materializations_for_node(key.replace("/", "__"))[0].metadata


def _sensor(instance, min_new: int):
    sensor = distillation.build_gate_retraining_sensor(min_new_examples=min_new)
    return sensor(dg.build_sensor_context(instance=instance))


def test_llm_answers_retrain_the_gate_through_the_sensor_and_a_worse_candidate_never_serves(lake):
    root, resources, instance = lake
    delta = resources["delta"]
    first_gate = instance.get_latest_materialization_event(EMBEDDING_GATE).asset_materialization.metadata
    serving_version = first_gate["gate_version"].value

    # An LLM that is always wrong on cases the gate never saw: a confident but poisoned teacher.
    poisoned = golden_cases(n=240, seed=501, split="held_out")
    labels = current_pack().labels
    wrong = [labels[(labels.index(c["label"]) + 1) % len(labels)] for c in poisoned]
    _write_cases(delta, poisoned, wrong)
    # Two analysts agree on the right label of one case: their verdict replaces the LLM's.
    delta.overwrite(EVALUATION_RATINGS, pl.DataFrame([
        {**_rating(poisoned[0]["event_id"], False, poisoned[0]["label"], model_label=wrong[0], analyst=who),
         "text": "t"} for who in ("ana", "bo")]))
    meta = _materialize(resources, instance, "models/gate_training_examples")

    stored = delta.read(GATE_TRAINING_EXAMPLES)
    assert meta["examples"].value == stored.height > 200 and meta["new_examples_since_gate"].value == stored.height
    assert meta["labels_corrected_by_analysts"].value == 1
    assert not any(find_pii(t) for t in stored["text"])
    assert not any(p in " ".join(stored["text"]) for c in poisoned for p in c["pii"])
    assert isinstance(_sensor(instance, min_new=stored.height + 1), dg.SkipReason)
    request = _sensor(instance, min_new=50)
    assert isinstance(request, dg.RunRequest) and request.asset_selection == [EMBEDDING_GATE]

    rejected = _materialize(resources, instance, "models/embedding_gate")

    assert rejected["candidate_accepted"].value is False
    assert rejected["gate_version"].value == serving_version  # enriched/cases keeps the serving gate
    assert rejected["candidate_gate_version"].value != serving_version
    assert "keeping the serving gate" in rejected["held_out_verdict"].value
    assert rejected["training_sources"].value["distilled_examples"] == stored.height
    # The gate considered these examples: no new retraining until new ones arrive.
    assert isinstance(_sensor(instance, min_new=1), dg.SkipReason)
    assert _materialize(resources, instance, "models/gate_training_examples")["new_examples_since_gate"].value == 0

    # A good teacher on the same kind of cases: the candidate keeps its held-out accuracy and serves.
    _write_cases(delta, poisoned, [c["label"] for c in poisoned])
    meta = _materialize(resources, instance, "models/gate_training_examples")
    assert meta["new_examples_since_gate"].value > 200
    assert isinstance(_sensor(instance, min_new=50), dg.RunRequest)

    accepted = _materialize(resources, instance, "models/embedding_gate")

    assert accepted["candidate_accepted"].value is True, accepted["held_out_verdict"].value
    assert accepted["gate_version"].value not in (serving_version, rejected["candidate_gate_version"].value)
    # Compared with the best gate so far: the one serving (the rejected candidate never served, never stored).
    candidate, best = accepted["held_out_candidate"].value, accepted["held_out_best_so_far"].value
    assert best["gate_version"] == serving_version
    assert candidate["gated_share"] >= best["gated_share"]
