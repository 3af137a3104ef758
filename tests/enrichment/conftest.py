"""Fixtures of the enrichment tests: the OpenAI-compatible stand-in for vLLM, the embedding model,
and sample cases."""

from __future__ import annotations

import json

import pytest

from llm_assets.lib.redaction import redact
from llm_assets.llm.types import CaseContext
from llm_assets.domain.packs.payments_ops.sample_data.generator import SampleMessage, generate_messages, kb_corpus
from tests.support.openai_test_server import OpenAITestServer


@pytest.fixture
def openai_server():
    """A factory: `openai_server(slots=4, latency_s=0.05, faults=[...])` -> a started server, stopped after."""
    started: list[OpenAITestServer] = []

    def start(**kwargs) -> OpenAITestServer:
        server = OpenAITestServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def embedder():
    """The packaged embedding model, loaded once (about 10 s) for the tests that enrich through the pipeline."""
    from llm_assets.resources.embedder import EmbedderResource

    return EmbedderResource()


@pytest.fixture(scope="session")
def sample_messages() -> list[SampleMessage]:
    """The valid events of the seeded sample (3000 events), each with the PII planted in it."""
    return [m for m in generate_messages(3000) if m.kind == "valid"]


@pytest.fixture(scope="session")
def kb_documents() -> list[dict]:
    """KB documents as retrieval returns them; resolved cases carry PII of their own."""
    docs = []
    for rows in kb_corpus().values():
        docs += [{"doc_id": r["id"], "type": r["type"], "label": r.get("label"), "content": r["content"]} for r in rows]
    return docs


def _case_from_message(message: SampleMessage, retrieved: list[dict] | None = None) -> CaseContext:
    event = json.loads(message.value)
    return CaseContext(
        event_id=event["event_id"],
        text=redact(event["payload_raw"]).text,
        fields={"source_system": event["source_system"], "partner_id": event["partner_id"],
                "partner_risk_tier": "unknown", "is_exception": "false", "exception_type": "none"},
        retrieved=list(retrieved or []),
    )


@pytest.fixture(scope="session")
def case_from_message():
    """`case_from_message(message, retrieved=None)`: the CaseContext the enrichment asset would build
    (redacted text, non-PII fields only)."""
    return _case_from_message
