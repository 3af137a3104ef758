"""The `events.raw` contract and the batch bookkeeping, as pure functions."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import polars as pl
import pytest

from llm_assets.ingest import contract
from llm_assets.ingest.batches import (
    IngestCursor,
    PendingBatch,
    date_clusters,
    offsets_to_commit,
    plan_batch,
    run_key,
)
from llm_assets.ingest.checks import contract_violations, duplicate_event_ids
from llm_assets.ingest.contract import (
    DATE_COLUMNS,
    REQUIRED_FIELDS,
    PartitionWindow,
    parse_value,
    validate_values,
)
from llm_assets.resources.kafka import KafkaIngestSettings
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_messages
from tests.support.contract_reference import InvalidEvent, ValidEvent, event_row, validate_event

pytestmark = pytest.mark.unit

WINDOW = PartitionWindow(first=date(2025, 1, 1), last=date(2026, 12, 31))
EVENT = {"event_id": "evt-1", "source_system": "ledger", "event_ts": "2026-11-18T10:00:00Z",
         "partner_id": "P-001", "entity_id": "ENT-00001", "payload_raw": "amount mismatch"}


def _value(**changes) -> bytes:
    return json.dumps({**EVENT, **changes}).encode()


@pytest.mark.parametrize("kind, reason", [
    ("not_json", "not JSON"),
    ("empty_value", "empty value"),
    ("nul_bytes", "NUL bytes"),
    ("missing_event_id", "missing required field event_id"),
    ("bad_event_ts", "not an RFC 3339 timestamp with a zone"),
    ("wrong_types", "wrong type: partner_id must be a string, got int"),
    ("oversized_payload", "over the 16384-byte limit"),
])
def test_each_malformed_kind_is_rejected_with_a_readable_reason(kind, reason):
    sample = next(m for m in generate_messages(50) if m.kind == f"malformed:{kind}")
    outcome = validate_event(sample.value, window=WINDOW)
    assert isinstance(outcome, InvalidEvent)
    assert reason in outcome.reason


def test_every_valid_sample_message_passes():
    assert all(isinstance(validate_event(m.value, window=WINDOW), ValidEvent)
               for m in generate_messages(300) if not m.kind.startswith("malformed"))


def test_event_date_is_the_utc_day_of_an_offset_timestamp():
    outcome = validate_event(_value(event_ts="2026-11-19T01:30:00+02:00"), window=WINDOW)
    assert isinstance(outcome, ValidEvent)
    assert outcome.event_date == "2026-11-18"
    assert outcome.fields["event_ts"] == datetime(2026, 11, 18, 23, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("ts", ["2026-11-18T10:00:00", "2026-11-18", "1763460000", "2026-13-18T10:00:00Z"])
def test_timestamps_without_zone_or_unparseable_are_rejected(ts):
    outcome = validate_event(_value(event_ts=ts), window=WINDOW)
    assert isinstance(outcome, InvalidEvent) and "event_ts" in outcome.reason or "month" in outcome.reason


def test_unknown_fields_are_kept_in_extra_never_an_error():
    outcome = validate_event(_value(channel="email", score=3), window=WINDOW)
    assert isinstance(outcome, ValidEvent)
    assert json.loads(outcome.fields["extra"]) == {"channel": "email", "score": 3}
    assert validate_event(_value(), window=WINDOW).fields["extra"] is None


def test_strings_must_be_strings_and_event_id_non_empty():
    assert "must be a string, got int" in validate_event(_value(event_id=12), window=WINDOW).reason
    assert "event_id must not be empty" in validate_event(_value(event_id=""), window=WINDOW).reason
    assert validate_event(b"[1, 2]", window=WINDOW).reason == "not a JSON object"


def test_dates_without_a_daily_partition_are_rejected():
    before = validate_event(_value(event_ts="2024-12-31T23:00:00Z"), window=WINDOW)
    after = validate_event(_value(event_ts="2027-01-01T00:00:00Z"), window=WINDOW)
    assert "before the first daily partition 2025-01-01" in before.reason
    assert "after the last daily partition 2026-12-31" in after.reason


def test_payload_limit_is_configurable():
    assert isinstance(validate_event(_value(), max_payload_bytes=50), InvalidEvent)
    assert isinstance(validate_event(_value(), max_payload_bytes=500), ValidEvent)
    # The sensor's setting (KAFKA_MAX_PAYLOAD_BYTES) defaults to the domain pack's limit.
    assert KafkaIngestSettings().max_payload_bytes == 0
    assert contract.current_max_payload_bytes(0) == contract.DEFAULT_MAX_PAYLOAD_BYTES
    assert contract.current_max_payload_bytes(500) == 500
    assert KafkaIngestSettings.from_variables({"KAFKA_MAX_PAYLOAD_BYTES": "500"}).max_payload_bytes == 500


def test_rerun_rows_with_the_same_content_are_not_rewritten():
    now = datetime.now(timezone.utc)
    row = event_row(validate_event(_value()), topic="t", partition=0, offset=1, ingested_at=now)
    stored = contract.events_frame([row])
    again = contract.events_frame([{**row, "kafka_offset": 7, "ingested_at": now}])
    changed = contract.events_frame([{**row, "payload_raw": "corrected"}])
    assert contract.new_or_changed_events(again, stored).is_empty()
    assert contract.new_or_changed_events(changed, stored).height == 1


def test_a_batch_is_one_run_over_its_date_range_that_also_dead_letters():
    plan = plan_batch(partitions=[0, 0, 0, 1, 0, 1], offsets=[10, 11, 12, 5, 13, 6],
                      dates=["2026-11-18", None, "2026-11-20", "2026-11-18", "2026-11-18", None])
    assert len(plan.runs) == 1
    run = plan.runs[0]
    assert (run.first_date, run.last_date, run.target) == ("2026-11-18", "2026-11-20", "2026-11-18..2026-11-20")
    assert run.ranges == {0: (10, 14), 1: (5, 7)} and run.dead_letters
    assert plan.read == {0: (10, 14), 1: (5, 7)}
    assert plan.counts == {"2026-11-18": 3, "2026-11-20": 1, "rejected": 2}
    assert run_key("events.raw", 0, run.ranges, run.target) == "events.raw:g0:p0:10-14,p1:5-7:2026-11-18..2026-11-20"


def test_far_apart_dates_get_their_own_run_reading_only_their_offsets():
    # Today's stream with one event of last month in the middle, and an invalid message at the end.
    offsets = list(range(100, 110))
    dates = ["2026-11-18"] * 4 + ["2026-10-19"] + ["2026-11-19"] * 4 + [None]
    plan = plan_batch([0] * 10, offsets, dates, max_date_gap_days=3)
    by_target = {r.target: r for r in plan.runs}
    assert set(by_target) == {"2026-10-19", "2026-11-18..2026-11-19"}
    late, main = by_target["2026-10-19"], by_target["2026-11-18..2026-11-19"]
    assert late.ranges == {0: (104, 105)} and not late.dead_letters
    assert main.ranges == {0: (100, 110)} and main.dead_letters  # the whole batch: every invalid message
    assert date_clusters(["2026-11-18", "2026-11-21", "2026-11-25"], 3) == [["2026-11-18", "2026-11-21"],
                                                                          ["2026-11-25"]]


def test_a_batch_without_valid_events_is_a_dead_letter_run():
    plan = plan_batch([0, 0], [7, 8], [None, None])
    assert [(r.target, r.ranges, r.dead_letters) for r in plan.runs] == [("rejected", {0: (7, 9)}, True)]
    assert plan_batch([], [], []).runs == []


ADVERSARIAL = [
    _value(x={"event_ts": "2020-01-01T00:00:00Z"}),  # a nested key after the real one
    json.dumps({"x": {"event_ts": "2020-01-01T00:00:00Z"}, **EVENT}).encode(),  # ... and before it
    b'{"event\\u005fts": "2026-11-18T10:00:00Z", "x": {"event_ts": "2020-01-01T00:00:00Z"}, "event_id": "e",'
    b' "source_system": "s", "partner_id": "p", "entity_id": "x", "payload_raw": "r"}',  # escaped real key
    _value(payload_raw='quoted "event_ts": "2020-01-01T00:00:00Z"'),  # escaped quotes in the bytes
    json.dumps({**EVENT, "event_ts": "2026-11-18T23:30:00-01:00"}, indent=2).encode(),
    _value(event_ts="2026-11-18t10:00:00z"), b"\xff" + _value(), _value(event_ts=17), None, b"",
    b'{"event_ts": "2020-01-01T00:00:00Z", "event_id": "e", "source_system": "s", "partner_id": "p",'
    b' "entity_id": "x", "payload_raw": "r", "event_ts": "2026-11-18T10:00:00Z"}',  # duplicate key: last wins
]
ADVERSARIAL_DATES = ["2026-11-18", "2026-11-18", "2026-11-18", "2026-11-18", "2026-11-19", "2026-11-18", None, None,
                     None, None, "2026-11-18"]


# Values of every shape the vectorized paths must read exactly as the one-by-one parser does.
SHAPES = [
    _value(), _value(payload_raw='a "quoted" word, a \\ backslash, a tab\t and a slash /'),
    _value(payload_raw="caf\u00e9 \u2603 \U0001F600"), json.dumps({**EVENT, "payload_raw": "caf\u00e9"},
                                                                     ensure_ascii=False).encode(),
    _value(payload_raw="pair \U0001F600").replace(b"\\ud83d\\ude00", b"\\uD83D\\uDE00"),
    _value(payload_raw="x").replace(b'"x"', b'"lone \\ud800"'),
    json.dumps(dict(reversed(list(EVENT.items())))).encode(),  # another key order
    json.dumps(EVENT, separators=(",", ":")).encode(), b" \n" + _value() + b" \t",
    _value(channel="email"), _value(channel={"nested": [1, 2]}), _value(score=3.5, flag=True),
    _value(event_id=""), _value(event_id="a").replace(b'{"event_id": "a"', b'{"event_id": "", "event_id": "a"'),
    _value(event_id="a").replace(b'{"event_id": "a"', b'{"event_id": "a", "event_id": ""'),
    _value(partner_id=None), _value(partner_id=["P"]), b"{}", b"[]", b'"text"', b"{\"event_id\": \"a\",}",
    _value(payload_raw="raw\ncontrol").replace(b"\\n", b"\n"), _value() + b" trailing",
]


def test_the_sensor_gets_the_run_verdicts_for_every_message():
    values = [m.value for m in generate_messages(2_000)] + SHAPES + ADVERSARIAL
    verdicts = validate_values(values, window=WINDOW)
    sensor = validate_values(values, window=WINDOW, columns=DATE_COLUMNS)  # what the sensor asks for
    assert sensor.dates_by_index(len(values)) == verdicts.dates_by_index(len(values))
    assert sensor.invalid == verdicts.invalid
    assert sum(d is not None for d in verdicts.dates_by_index(len(values))) >= 1_900
    assert verdicts.dates_by_index(len(values))[-len(ADVERSARIAL):] == ADVERSARIAL_DATES


@pytest.mark.parametrize("first", [_value(), json.dumps(dict(reversed(list(EVENT.items())))).encode()],
                         ids=["usual key order first", "reversed key order first"])
def test_vectorized_paths_read_every_shape_like_the_exact_parser(first):
    values = [first, *SHAPES]
    checked = validate_values(values, window=WINDOW)
    rows = {r["position"]: r for r in checked.events.iter_rows(named=True)}
    reasons = dict(checked.invalid)
    for i, value in enumerate(values):
        expected = parse_value(value)
        if isinstance(expected, str):
            assert reasons.get(i) == expected, (value, reasons.get(i))
            continue
        assert i in rows, (value, reasons.get(i))
        got = tuple(rows[i][name] for name in REQUIRED_FIELDS if name != "event_ts") + (rows[i]["extra"],)
        assert got == tuple(v for name, v in zip((*REQUIRED_FIELDS, "extra"), expected) if name != "event_ts")


def test_batch_validation_returns_rows_in_order_and_reasons_by_index():
    values = [_value(event_id="a"), b"not json", _value(event_id="b", event_ts="2026-11-19T00:00:00+01:00")]
    checked = validate_values(values, window=WINDOW)
    assert checked.events["event_id"].to_list() == ["a", "b"]
    assert checked.events["position"].to_list() == [0, 2]
    assert checked.events["event_date"].to_list() == ["2026-11-18", "2026-11-18"]
    assert [(i, r.split(":")[0]) for i, r in checked.invalid] == [(1, "not JSON")]
    frame = contract.valid_events_frame(checked, topic="t", partitions=[0, 0, 1], offsets=[5, 6, 7],
                                        ingested_at=datetime.now(timezone.utc))
    assert frame.schema == contract.RAW_EVENTS_SCHEMA
    assert frame.select("kafka_partition", "kafka_offset").rows() == [(0, 5), (1, 7)]


def test_offsets_are_committed_only_for_the_leading_finished_batches():
    batches = [PendingBatch(batch_id=b, run_keys=[b], next_offsets=o, requested_at=0)
               for b, o in [("a", {0: 10}), ("b", {0: 20, 1: 5}), ("c", {1: 9})]]
    cursor = IngestCursor(topic="t", pending=batches)
    assert offsets_to_commit(cursor, {"b", "c"}) == ({}, 0)
    assert offsets_to_commit(cursor, {"a", "b"}) == ({0: 20, 1: 5}, 2)
    assert IngestCursor.parse(cursor.dump(), "t") == cursor
    assert IngestCursor.parse(cursor.dump(), "other").pending == []


def test_check_rules_find_broken_rows():
    now = datetime.now(timezone.utc)
    good = event_row(validate_event(_value()), topic="t", partition=0, offset=1, ingested_at=now)
    df = contract.events_frame([good, {**good, "event_id": "evt-2", "event_date": "2026-11-19"},
                                {**good, "partner_id": None}])
    assert contract_violations(df, "2026-11-18") == {
        "null partner_id": 1, "event_date differs from the UTC day of event_ts": 1,
        "event_date differs from the partition": 1}
    assert duplicate_event_ids(df).to_dicts() == [{"event_id": "evt-1", "rows": 2}]
    assert contract_violations(df.head(1), "2026-11-18") == {}
    assert duplicate_event_ids(pl.DataFrame()).is_empty()
