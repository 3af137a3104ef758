"""PII never leaves redaction: every format of the independent PII corpus, planted in cases that go
through `enriched/cases` against the OpenAI-compatible test server, is absent (in every way a
person would write it, digits-only included) from every request body the server received, every
enriched row, the result cache, the messages published to `cases.enriched`, the audit bundle, and
the logs (pytest's captured records and the run's Dagster event log)."""

import json
import logging
import re
from datetime import datetime, timezone

import dagster as dg
import pytest

from llm_assets import settings
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS, RESULT_CACHE
from llm_assets.dev.broker import create_topics
from llm_assets.ingest import contract
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from tests.support.pii_corpus import KINDS, pii_sentences
from tests.support.pipeline import artifact_resources, materialize_keys, use_local_home
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

DAY = "2026-11-18"
UNPARTITIONED = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index", "models/embedding_gate"]
# The issue's own examples of national formats that once reached the endpoint in clear, planted on top.
EXTRA_VALUES = (
    ("phone", "(212) 555-0134"), ("phone", "212.555.0134"), ("phone", "(416) 555-0199 ext. 12"),
    ("phone", "020 7946 0958"), ("phone", "030 12345678"), ("phone", "01 42 68 53 00"),
    ("phone", "098765 43210"), ("phone", "(11) 98765-4321"), ("email", "First.Last+Refunds@Mail.Sub.Example.COM"),
    ("iban", "DE89 3704 0044 0532 0130 00"), ("iban", "fr1420041010050500013m02606"),
    ("card", "4111 1111 1111 1111"), ("national_id", "078-05-1120"),
)
MIN_NEEDLE = 6  # shorter forms (an extension, a country code) are not the value any more
# Hashes, run ids and versions are hex: a digits-only needle could occur in one by chance.
_HEX_WITH_LETTERS = re.compile(r"(?<![0-9a-fA-F])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}(?![0-9a-fA-F])")
_EXTENSION = re.compile(r"(?i)\s*(?:,\s*)?(?:x|ext\.?|extension|#)\s*\d+\s*$")


def written_forms(kind: str, value: str) -> set[str]:
    """The ways a person would write `value`: as planted, upper/lower case, without separators,
    digits only (with and without a phone extension)."""
    forms = {value, value.strip()}
    if kind != "email":
        forms |= {re.sub(r"[^0-9A-Za-z]", "", f) for f in list(forms)}
        main = _EXTENSION.sub("", value) if kind == "phone" else value
        forms |= {main, re.sub(r"\D", "", value), re.sub(r"\D", "", main)}
        if kind == "phone" and main.lstrip().startswith("+"):
            forms.add(re.sub(r"[^0-9+]", "", main))
    return {f.upper() for f in forms if len(f) >= MIN_NEEDLE}


def leaks(haystack: str, needles: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(kind, planted value, form found) for every needle in `haystack` (case-insensitive)."""
    text = _HEX_WITH_LETTERS.sub("<hex>", haystack).upper()
    return [(kind, value, form) for form, (kind, value) in needles.items() if form in text]


def _planted_cases() -> tuple[list[str], list[tuple[str, str]]]:
    """One corpus sentence per format class (every class the corpus has), plus the extra values."""
    texts, planted, seen = [], [], set()
    for sentence in pii_sentences():
        fresh = [p for p in sentence.planted if p.fmt not in seen]
        if not fresh:
            continue
        seen |= {p.fmt for p in sentence.planted}
        texts.append(sentence.text)
        planted += [(p.kind, p.value) for p in sentence.planted]
    for i, (kind, value) in enumerate(EXTRA_VALUES):
        said = f"SSN {value}" if kind == "national_id" else value
        texts.append(f"Customer called about dispute DSP-{4100 + i}; contact {said} before the cut-off.")
        planted.append((kind, value))
    return texts, planted


def _raw_events(delta: DeltaLakeStorage, texts: list[str]) -> list[str]:
    events = [{"event_id": f"pii-{i:05d}", "source_system": "ticketing", "event_ts": f"{DAY}T{(i // 60) % 24:02d}:"
               f"{i % 60:02d}:00Z", "partner_id": "P-007", "entity_id": "ENT-00001", "payload_raw": text}
              for i, text in enumerate(texts)]
    values = [json.dumps(e).encode() for e in events]
    frame = contract.valid_events_frame(contract.validate_values(values), topic="events.raw",
                                        partitions=[0] * len(values), offsets=list(range(len(values))),
                                        ingested_at=datetime.now(timezone.utc))
    assert frame.height == len(events)
    delta.merge(RAW_EVENTS, frame, ["event_id"], partition_column="event_date", partition_value=DAY)
    return [e["event_id"] for e in events]


def _published(bootstrap: str, ids: set[str]) -> list[str]:
    return [value.decode() for key, value in read_topic(bootstrap, settings.ENRICHED_TOPIC) if key in ids]


def test_written_forms_cover_the_ways_people_write_a_value():
    assert {"(212) 555-0134", "2125550134"} <= {f.lower() for f in written_forms("phone", "(212) 555-0134 x12")}
    assert "DE89370400440532013000" in written_forms("iban", "de89 3704 0044 0532 0130 00")
    assert "4111111111111111" in written_forms("card", "4111-1111-1111-1111")
    # The search finds a value written differently, and is not fooled by a hash that happens to hold its digits.
    needles = {f: ("card", "4111 1111 1111 1111") for f in written_forms("card", "4111 1111 1111 1111")}
    assert leaks("paid with 4111111111111111 today", needles)
    assert not leaks("sha256 ab4111111111111111cd9f00", needles)


@pytest.fixture
def home(tmp_path, kafka_broker, monkeypatch):
    use_local_home(monkeypatch, tmp_path)
    generate_sample_data(tmp_path / "sample_data", n_events=20, days=1)
    create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
    return tmp_path


def test_no_planted_pii_reaches_the_llm_the_rows_the_topic_or_the_logs(home, kafka_broker, openai_server,
                                                                       monkeypatch, caplog):
    texts, planted = _planted_cases()
    assert {kind for kind, _ in planted} == set(KINDS)
    server = openai_server(slots=8)
    monkeypatch.setenv("LLM_BASE_URL", server.base_url)
    delta = DeltaLakeStorage(root=str(home / "delta"))
    resources = {"delta": delta, "milvus": MilvusResource(uri=str(home / "milvus" / "kb.db")),
                 "embedder": EmbedderResource(), "kafka": KafkaResource(bootstrap_servers=kafka_broker),
                 "llm": LLMResource(base_url=server.base_url, max_concurrency=8), **artifact_resources(home)}
    event_ids = _raw_events(delta, texts)
    instance = dg.DagsterInstance.ephemeral()
    caplog.set_level(logging.DEBUG)
    assert materialize_keys(resources, UNPARTITIONED, instance=instance).success
    assert materialize_keys(resources, ["curated/cases"], partition_key=DAY, instance=instance).success
    assert delta.count(CURATED_CASES) == len(event_ids)

    # The gate off: every case must reach the server (a gate that decided them all would prove nothing).
    result = materialize_keys(resources, ["enriched/cases"], partition_key=DAY, instance=instance,
                              run_config={"ops": {"enriched__cases": {"config": {"use_gate": False}}}})

    assert result.success
    rows = delta.read(ENRICHED_CASES)
    assert sorted(rows["event_id"]) == sorted(event_ids)
    assert set(rows["route"]) == {"llm"}
    bodies = [r["body"] for r in server.chat_requests]
    prompted = " ".join(json.dumps(b) for b in bodies)
    assert len(bodies) == len(event_ids)  # one combined call per case: each case reached the server
    # Each case's redacted text was in a prompt (with placeholders where its PII was).
    assert sum("<case>" in json.dumps(b) for b in bodies) == len(event_ids)
    kinds_placeheld = {k for k in KINDS if f"<{k.upper()}>" in prompted}
    assert kinds_placeheld == set(KINDS)

    needles = {form: (kind, value) for kind, value in planted for form in written_forms(kind, value)}
    assert len(needles) > 2 * len(texts)  # several written forms per value
    places = {
        "request bodies": [json.dumps(b, ensure_ascii=False) for b in bodies],
        "enriched rows": [json.dumps(r, default=str, ensure_ascii=False) for r in rows.drop(
            "input_sha256", "redacted_prompt_sha256", "source_sha256").to_dicts()],
        "result cache": [json.dumps(r, default=str, ensure_ascii=False) for r in delta.read(RESULT_CACHE).drop(
            "cache_key", "input_sha256", "redacted_prompt_sha256").to_dicts()],
        "cases.enriched": _published(kafka_broker, set(event_ids)),
        "audit bundles": [p.read_text() for p in (home / "artifacts" / "audit").rglob("*.json")],
        "captured logs": [r.getMessage() for r in caplog.records],
        "dagster event log": [dg.serialize_value(e) for run in instance.get_runs()
                              for e in instance.all_logs(run.run_id)],
    }
    assert len(places["cases.enriched"]) == len(event_ids) and places["audit bundles"]
    assert places["dagster event log"] and places["captured logs"]
    found = {where: sorted({hit for text in texts_ for hit in leaks(text, needles)})
             for where, texts_ in places.items()}
    assert found == {where: [] for where in places}, {w: f[:10] for w, f in found.items() if f}
