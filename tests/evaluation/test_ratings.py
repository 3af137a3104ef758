"""`evaluation/ratings`: ratings from Kafka `cases.ratings` and dropped files, under a contract."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import EVALUATION_RATINGS, EVALUATION_SAMPLES, REJECTED_RATINGS
from llm_assets.gate.model import training_examples
from llm_assets.evaluation import ratings
from llm_assets.evaluation.assets import evaluation_ratings, evaluation_samples
from llm_assets.resources.kafka import KafkaResource
from tests.evaluation.lake import make_cases, write_cases

pytestmark = pytest.mark.integration

DAY = "2026-11-18"
T0 = datetime(2026, 11, 19, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def sampled(delta):
    """A day of cases and its samples (10% of 80 cases, at least 3 per label)."""
    write_cases(delta, make_cases(DAY, 80, seed=11))
    assert dg.materialize([evaluation_samples], partition_key=DAY, resources={"delta": delta},
                          run_config={"ops": {"evaluation__samples": {"config": {"rate": 0.1}}}}).success
    return delta.read(EVALUATION_SAMPLES).sort("event_id")


def _rating(sample: dict, analyst: str, *, correct: bool = True, right_label: str | None = None,
            accepted: list[str] | None = None, at: datetime = T0) -> dict:
    verbs = [a["action"] for a in json.loads(sample["actions"])]
    return {"event_id": sample["event_id"], "analyst": analyst, "label_correct": correct,
            "correct_label": right_label, "actions_accepted": verbs[:1] if accepted is None else accepted,
            "rated_at": at.isoformat()}


def _import(delta, kafka_broker, topic, drop_dir, instance=None):
    return dg.materialize(
        [evaluation_ratings], instance=instance,
        resources={"delta": delta, "kafka": KafkaResource(bootstrap_servers=kafka_broker)},
        run_config={"ops": {"evaluation__ratings": {"config": {"topic": topic, "drop_dir": str(drop_dir),
                                                                "consumer_group": f"{topic}-group"}}}})


def _other_label(label: str) -> str:
    return "other" if label != "other" else "data_quality"


def test_the_contract_reads_file_values_and_says_why_a_row_is_bad():
    good = ratings.parse_rating({"event_id": "e1", "analyst": " ana ", "label_correct": "no",
                                 "correct_label": "fraud_suspected", "actions_accepted": "escalate; notify",
                                 "rated_at": "2026-11-19T09:00:00Z"}, source="file", source_ref="f:2", raw="")
    assert isinstance(good, ratings.Accepted)
    assert good.rating.analyst == "ana" and good.rating.actions_accepted == ["escalate", "notify"]
    bad = ratings.parse_rating({"event_id": "e1", "analyst": "", "label_correct": "maybe",
                                "actions_accepted": ["launder"], "rated_at": "2026-11-19T09:00:00"},
                               source="file", source_ref="f:3", raw="")
    assert isinstance(bad, ratings.Rejection)
    reasons = " | ".join(bad.reasons)
    for field in ("analyst", "label_correct", "actions_accepted", "rated_at"):
        assert field in reasons, reasons
    wrong_without_label = ratings.parse_rating({"event_id": "e1", "analyst": "a", "label_correct": False,
                                                "rated_at": "2026-11-19T09:00:00+01:00"},
                                               source="file", source_ref="f:4", raw="")
    assert isinstance(wrong_without_label, ratings.Rejection)
    assert "correct_label is required" in wrong_without_label.reasons[0]


def test_bad_rows_are_rejected_with_reasons_and_good_rows_kept(delta, sampled, kafka_broker, make_topic, tmp_path):
    s = sampled.to_dicts()
    topic = make_topic(hint="ratings")
    drop = tmp_path / "inbox"
    drop.mkdir()
    good_messages = [_rating(s[0], "ana"), _rating(s[1], "ana", correct=False, right_label=_other_label(s[1]["label"]))]
    bad_messages = [
        (s[2]["event_id"], b"{not json"),
        (s[2]["event_id"], json.dumps({**_rating(s[2], "ana"), "actions_accepted": ["launder"]}).encode()),
        ("someone-else", json.dumps(_rating(s[3], "ana")).encode()),  # key is not the event_id
        ("evt-unknown", json.dumps({**_rating(s[3], "ana"), "event_id": "evt-unknown"}).encode()),
    ]
    KafkaResource(bootstrap_servers=kafka_broker).produce_batch(
        topic, [(m["event_id"], json.dumps(m).encode()) for m in good_messages] + bad_messages)
    (drop / "monday.csv").write_text(
        "event_id,analyst,label_correct,correct_label,actions_accepted,rated_at\n"
        f"{s[4]['event_id']},bob,yes,,,{T0.isoformat()}\n"
        f"{s[5]['event_id']},bob,no,{s[5]['label']},,{T0.isoformat()}\n"  # contradiction: the model's own label
        f"{s[6]['event_id']},bob,yes,,,not a time\n")
    (drop / "tuesday.jsonl").write_text(json.dumps(_rating(s[7], "cy")) + "\n" + "{broken\n")
    (drop / "notes.txt").write_text("not a rating file")

    result = _import(delta, kafka_broker, topic, drop)
    assert result.success
    kept = delta.read(EVALUATION_RATINGS).sort("event_id")
    assert sorted(kept["event_id"]) == sorted([s[0]["event_id"], s[1]["event_id"], s[4]["event_id"], s[7]["event_id"]])
    wrong = kept.filter(pl.col("event_id") == s[1]["event_id"]).row(0, named=True)
    assert wrong["label_correct"] is False and wrong["label"] == _other_label(s[1]["label"])
    assert wrong["model_label"] == s[1]["label"] and wrong["text"] == s[1]["text"]

    rejected = delta.read(REJECTED_RATINGS)
    reasons = dict(zip(rejected["source_ref"], rejected["reasons"].to_list()))
    assert len(reasons) == 7
    joined = " | ".join("; ".join(r) for r in reasons.values())
    for expected in ("not JSON", "launder", "is not the event_id", "not a sample in evaluation/samples",
                     "label_correct is false but correct_label is the case's label", "rated_at"):
        assert expected in joined, (expected, joined)
    assert any(ref.startswith("monday.csv:") for ref in reasons) and any(r.startswith("tuesday.jsonl:")
                                                                         for r in reasons)
    metadata = result.asset_materializations_for_node("evaluation__ratings")[0].metadata
    assert metadata["rejected"].value == 7 and metadata["ratings_written"].value == 4
    assert "launder" in json.dumps(metadata["rejections"].value)

    # What models/embedding_gate reads: `text` and `label` of each rating.
    examples = training_examples([], kept.select("text", "label").iter_rows())
    assert len(examples.texts) == 4 and examples.skipped == 0


def test_a_rerun_reads_only_new_messages_and_files(delta, sampled, kafka_broker, make_topic, tmp_path):
    s = sampled.to_dicts()
    topic = make_topic(hint="ratings-rerun")
    kafka = KafkaResource(bootstrap_servers=kafka_broker)
    kafka.produce_batch(topic, [(s[0]["event_id"], json.dumps(_rating(s[0], "ana")).encode())])
    (tmp_path / "a.jsonl").write_text(json.dumps(_rating(s[1], "bob")) + "\n")
    instance = dg.DagsterInstance.ephemeral()
    assert _import(delta, kafka_broker, topic, tmp_path, instance).success
    assert delta.count(EVALUATION_RATINGS) == 2

    nothing_new = _import(delta, kafka_broker, topic, tmp_path, instance)
    assert nothing_new.success and nothing_new.get_asset_materialization_events() == []

    kafka.produce_batch(topic, [(s[2]["event_id"], json.dumps(_rating(s[2], "ana")).encode())])
    again = _import(delta, kafka_broker, topic, tmp_path, instance)
    metadata = again.asset_materializations_for_node("evaluation__ratings")[0].metadata
    assert metadata["messages_read"].value == 1 and "a.jsonl" not in metadata["files_imported"].value
    assert delta.count(EVALUATION_RATINGS) == 3


def test_the_latest_rating_per_case_and_analyst_wins(delta, sampled, kafka_broker, make_topic, tmp_path):
    s = sampled.to_dicts()[0]
    topic = make_topic(hint="ratings-latest")
    kafka = KafkaResource(bootstrap_servers=kafka_broker)
    first = _rating(s, "ana", accepted=[], at=T0)
    revised = _rating(s, "ana", correct=False, right_label=_other_label(s["label"]), at=T0 + timedelta(hours=1))
    other_analyst = _rating(s, "bob", at=T0)
    kafka.produce_batch(topic, [(s["event_id"], json.dumps(m).encode()) for m in (revised, first, other_analyst)])
    assert _import(delta, kafka_broker, topic, tmp_path).success
    # An old rating arriving late (a file dropped afterwards) changes nothing.
    (tmp_path / "late.jsonl").write_text(json.dumps(_rating(s, "ana", at=T0 - timedelta(days=1))) + "\n")
    assert _import(delta, kafka_broker, topic, tmp_path).success
    rows = {r["analyst"]: r for r in delta.read(EVALUATION_RATINGS).iter_rows(named=True)}
    assert set(rows) == {"ana", "bob"}
    assert rows["ana"]["label_correct"] is False and rows["ana"]["rated_at"] == T0 + timedelta(hours=1)
    assert rows["bob"]["label_correct"] is True
