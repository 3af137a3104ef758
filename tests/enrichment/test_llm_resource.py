"""The LLM transport (`LLMResource`) and the LLM strategy of enrichment (`LLMEnricher`) against the
OpenAI-compatible test server, over real HTTP."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading

import dagster as dg
import polars as pl
import pytest

from llm_assets.dev.process import free_port
from llm_assets.llm import pipeline, prompts
from llm_assets.llm.llm_enricher import LLMEnricher, describe, skill_request
from llm_assets.llm.model_versions import versions_for
from llm_assets.lib.redaction import PII_KINDS, find_pii
from llm_assets.llm.types import ERROR_KINDS, BatchStats, CaseContext, CaseResult
from llm_assets.resources import llm as transport
from llm_assets.resources.llm import (
    AdaptiveConcurrency,
    CircuitBreaker,
    LLMAnswer,
    LLMRequest,
    LLMResource,
    LLMServerUnavailable,
    OfflineSession,
)
from llm_assets.domain.packs.payments_ops.sample_data.generator import golden_cases

pytestmark = pytest.mark.integration

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)
VERSIONS = pipeline.Versions(model_version="vllm:test-model", prompt_version="enrich_case@v2", kb_index_version="k")


def _cases(n: int, prefix: str = "evt") -> list[CaseContext]:
    texts = ["Card <CARD> used in 4 countries within 10 minutes; velocity rule fired.",
             "Partner P-017 reports 120.50 EUR for reference REF-123456 but our ledger shows 98.10 EUR.",
             "Settlement file row has a null settlement_amount and currency code 'XXX'.",
             "Ticket was placed in the chargebacks queue but concerns a KYC document upload from <EMAIL>.",
             "Customer <EMAIL> asked for a copy of last month's invoice."]
    return [CaseContext(f"{prefix}-{i:04d}", texts[i % len(texts)], {"partner_id": "P-017"},
                        [{"doc_id": "policy-fraud", "type": "policy", "label": "fraud_suspected",
                          "content": "Fraud handling policy: escalate with supervisor approval."}])
            for i in range(n)]


def _requests(n: int) -> list[LLMRequest]:
    return [skill_request(prompts.ENRICH_CASE, prompts.build_messages(prompts.ENRICH_CASE, c), max_tokens=512,
                          temperature=0.0) for c in _cases(n)]


def _golden_frame(n: int) -> pl.DataFrame:
    rows = golden_cases(n)
    return pl.DataFrame({"event_id": [r["event_id"] for r in rows], "payload_raw": [r["payload_raw"] for r in rows],
                         "source_system": [r["source_system"] for r in rows],
                         "partner_id": [r["partner_id"] for r in rows]})


def _no_context(vectors):
    return [[] for _ in range(len(vectors))]


# -- the transport: a request in, an answer out ----------------------------------------------------

def test_the_transport_sends_messages_schema_and_limits_and_answers_text_and_usage(openai_server):
    server = openai_server(slots=2)
    llm = LLMResource(base_url=f"{server.base_url}/v1", model="test-model")
    [answer] = llm.complete(_requests(1))
    assert answer.ok and answer.attempts == 1 and answer.finish_reason == "stop"
    assert json.loads(answer.text)["label"] == "fraud_suspected"
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0 and answer.latency_s > 0
    [body] = [r["body"] for r in server.chat_requests]
    assert body["model"] == "test-model" and body["max_tokens"] == 512 and body["temperature"] == 0.0
    assert body["response_format"] == prompts.ENRICH_CASE.response_format()


def test_concurrency_never_exceeds_the_limit(openai_server):
    server = openai_server(slots=32, latency_s=0.03)
    answers = LLMResource(base_url=server.base_url, max_concurrency=4).complete(_requests(40))
    assert all(a.ok for a in answers)
    assert 1 < server.max_concurrency <= 4


def test_server_errors_overload_and_dropped_connections_are_retried_and_a_slow_answer_is_waited_for(
        openai_server):
    server = openai_server(slots=1, faults=["http_500", "http_429", "http_503", "drop", "timeout"],
                           timeout_sleep_s=1.0)
    llm = LLMResource(base_url=server.base_url, max_concurrency=1, request_timeout_s=0.3, max_retries=2, **FAST)
    [answer] = llm.complete(_requests(1))
    assert answer.ok and json.loads(answer.text)["label"] == "fraud_suspected"
    # The answer that took 1 s (past the 0.3 s check-in, /health up) was waited for, not re-sent.
    assert answer.attempts == 5 and server.aborted == 0
    assert server.faults_served == ["http_500", "http_429", "http_503", "drop", "timeout"]
    stats = llm.stats()
    assert stats["retries"] == 4 and stats["overloads"] >= 3  # 429, 503, and the slow answer's check-ins
    assert llm.breaker.times_opened == 0  # the server stayed up


def test_a_request_waiting_on_a_server_whose_health_fails_is_abandoned_and_the_breaker_opens(openai_server):
    server = openai_server(slots=1, faults=["timeout"], timeout_sleep_s=5.0)
    llm = LLMResource(base_url=server.base_url, model="test-model", request_timeout_s=0.4, **FAST)
    sick = threading.Timer(0.2, setattr, (server, "healthy", False))  # after the batch's first /health probe
    sick.start()
    try:
        [answer] = llm.complete(_requests(1))
    finally:
        sick.cancel()
    assert answer.error_kind == "circuit_open" and answer.attempts == 1  # abandoned, then not sent again
    assert f"LLM server at {server.base_url} is down" in answer.error and "503" in answer.error
    assert llm.stats()["overloads"] == 0  # a dead server is not a slow one


def test_a_request_past_the_overload_patience_is_flagged_timeout(openai_server):
    server = openai_server(slots=1, faults=["timeout"], timeout_sleep_s=3.0)
    llm = LLMResource(base_url=server.base_url, request_timeout_s=0.2, overload_patience_s=0.6, **FAST)
    [answer] = llm.complete(_requests(1))
    assert not answer.ok and answer.error_kind == "timeout" and answer.attempts == 1
    assert "still overloaded" in answer.error and llm.breaker.times_opened == 0


def test_a_request_that_keeps_failing_is_flagged_after_the_last_retry(openai_server):
    server = openai_server(slots=1, faults=["http_500"] * 3)
    llm = LLMResource(base_url=server.base_url, max_concurrency=1, max_retries=2, **FAST)
    [answer] = llm.complete(_requests(1))
    assert not answer.ok and answer.error_kind == "http_5xx" and answer.attempts == 3
    assert "after 2 retries" in answer.error


def test_a_rejected_request_is_not_retried(openai_server):
    server = openai_server(slots=1, api_key="right-key")
    llm = LLMResource(base_url=server.base_url, model="test-model", api_key="wrong-key", **FAST)
    [answer] = llm.complete(_requests(1))
    assert not answer.ok and answer.error_kind == "http_4xx" and answer.attempts == 1


def test_the_api_key_is_sent_as_a_bearer_token_and_the_served_model_is_discovered(openai_server):
    server = openai_server(slots=1, api_key="s3cret")
    llm = LLMResource(base_url=server.base_url, api_key="s3cret")
    assert llm.model_id() == "test-model"  # from /v1/models
    assert llm.complete(_requests(1))[0].ok
    assert server.chat_requests[0]["headers"]["Authorization"] == "Bearer s3cret"


def test_overload_cuts_concurrency_and_never_opens_the_breaker(openai_server):
    server = openai_server(slots=8, faults=["http_503"] * 6 + ["http_429"] * 2)
    llm = LLMResource(base_url=server.base_url, model="test-model", max_concurrency=8, max_retries=0,
                      breaker_failure_threshold=2, **FAST)
    answers = llm.complete(_requests(8))
    assert all(a.ok for a in answers)  # overload is waited out, it spends no retry
    stats = llm.stats()
    assert stats["breaker_times_opened"] == 0 and stats["overloads"] == 8
    assert stats["concurrency"]["test-model"]["cuts"] >= 1


def test_a_server_answering_500s_opens_the_breaker_fails_fast_and_closes_after_a_good_probe(openai_server):
    server = openai_server(slots=1, fault_rates={"http_500": 1.0})
    llm = LLMResource(base_url=server.base_url, model="test-model", max_concurrency=1, max_retries=0,
                      breaker_failure_threshold=3, **FAST)
    answers = llm.complete(_requests(8))
    assert [a.error_kind for a in answers] == ["http_5xx"] * 3 + ["circuit_open"] * 5
    assert "3 server errors in a row" in answers[-1].error
    assert len(server.chat_requests) == 3  # nothing is sent while the breaker is open
    assert llm.breaker.state == "open"

    server.set_faults(fault_rates={})  # the server recovers; the next batch's /health probe closes the breaker
    assert all(a.ok for a in llm.complete(_requests(4)))
    assert llm.breaker.state == "closed"


def test_circuit_breaker_opens_half_opens_and_closes_on_its_clock():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_s=10, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # exactly one probe
    breaker.record_failure()  # the probe failed: open again for another reset_s
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.times_opened == 2
    breaker.trip("server down")  # a dead server opens it at once, whatever the count
    assert breaker.state == "open" and breaker.reason == "server down"


def test_adaptive_concurrency_cuts_once_per_round_and_grows_back():
    limit = AdaptiveConcurrency(max_limit=32, min_limit=2)
    round_ = limit.epoch
    assert limit.on_overload(round_) and limit.current == 16
    assert not limit.on_overload(round_)  # the rest of that over-full round does not cut again
    assert limit.on_overload(limit.epoch) and limit.current == 8
    for _ in range(3):
        limit.on_overload(limit.epoch)
    assert limit.current == 2  # never below the floor
    for _ in range(200):
        limit.on_success()
    assert 2 < limit.current <= 32
    for _ in range(2000):
        limit.on_success()
    assert limit.current == 32  # never above max_concurrency


def test_a_slow_server_is_waited_for_and_every_case_gets_an_llm_answer(openai_server, embedder):
    # 2 slots of 0.25 s: 32 requests in flight (the default) wait up to 4 s, far past the 0.625 s timeout.
    server = openai_server(slots=2, latency_s=0.25)
    llm = LLMResource(base_url=server.base_url, model="test-model", request_timeout_s=0.625)
    assert llm.max_concurrency == 32

    run = pipeline.enrich_cases(_golden_frame(40), day="2026-11-18", versions=VERSIONS, retrieve=_no_context,
                                embed=embedder.encode, gate=None, llm=LLMEnricher(llm))

    assert run.routes == {"llm": 40} and not run.fallback_reasons
    assert all(r["route"] == "llm" and r["fallback_reason"] is None for r in run.rows)
    stats = llm.stats()
    assert stats["overloads"] >= 1 and stats["concurrency"]["test-model"]["cuts"] >= 1  # it backed off
    assert stats["concurrency"]["test-model"]["limit"] < 32
    assert server.aborted == 0 and stats["attempts"] == 40  # no answer abandoned, none sent twice
    assert stats["breaker_times_opened"] == 0  # a slow server is not a dead one


def test_with_the_server_stopped_the_breaker_opens_and_every_case_falls_back_with_the_reason(
        openai_server, embedder):
    server = openai_server(slots=4)
    url = server.base_url
    llm = LLMResource(base_url=url, model="test-model")
    llm.check_health()  # it was up when the run started
    server.stop()

    run = pipeline.enrich_cases(_golden_frame(40), day="2026-11-18", versions=VERSIONS, retrieve=_no_context,
                                embed=embedder.encode, gate=None, llm=LLMEnricher(llm))

    assert run.routes == {"fallback": 40} and run.fallback_reasons == {"circuit_open": 40}
    reasons = {r["fallback_reason"] for r in run.rows}
    assert len(reasons) == 1 and f"LLM server at {url} is down" in reasons.pop()
    assert all(r["label"] and r["actions"] for r in run.rows)  # the rules decided every case
    assert llm.stats()["attempts"] <= 10 and llm.breaker.state == "open"


def test_a_server_that_dies_mid_batch_opens_the_breaker_within_ten_requests(openai_server):
    server = openai_server(slots=4, latency_s=0.1, stop_after=6)
    llm = LLMResource(base_url=server.base_url, model="test-model", max_concurrency=4, **FAST)

    results = LLMEnricher(llm)(_cases(40))

    seen = len(server.chat_requests)  # what the server saw before it died (the 6th, and any racing it)
    assert 6 <= seen <= 6 + 4
    assert llm.stats()["attempts"] - seen <= 10  # what the client sent after
    answered = [r for r in results if r.ok]
    assert len(answered) < 6
    assert {r.error_kind for r in results if not r.ok} <= {"circuit_open", "connect"}
    assert sum(r.error_kind == "circuit_open" for r in results) >= 30
    assert llm.breaker.state == "open"


# -- the LLM strategy of enrichment: prompts, parsing, re-asking -----------------------------------

def test_one_combined_call_enriches_a_case_with_the_skill_json_schema(openai_server):
    server = openai_server(slots=4)
    llm = LLMResource(base_url=f"{server.base_url}/v1", model="test-model", max_concurrency=4)
    results = LLMEnricher(llm)(_cases(5))
    assert [r.label for r in results] == ["fraud_suspected", "partner_mismatch", "data_quality",
                                          "routing_error", "other"]
    assert all(r.ok and r.calls == 1 and r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)
    bodies = [r["body"] for r in server.chat_requests]
    assert len(bodies) == 5
    assert all(b["response_format"] == prompts.ENRICH_CASE.response_format() for b in bodies)


def test_per_skill_mode_sends_three_schema_constrained_calls_per_case(openai_server):
    server = openai_server(slots=8)
    enricher = LLMEnricher(LLMResource(base_url=server.base_url, max_concurrency=8), call_mode="per_skill")
    [result] = enricher(_cases(1))
    assert result.ok and result.calls == 3 and result.label == "fraud_suspected" and result.summary
    assert result.actions and result.severity == 5
    names = sorted(r["body"]["response_format"]["json_schema"]["name"] for r in server.chat_requests)
    assert names == ["classify", "propose_actions", "summarize"]


def test_truncated_json_is_re_asked_once_with_more_tokens_then_flagged(openai_server):
    server = openai_server(slots=1, faults=["truncated", "truncated"])
    enricher = LLMEnricher(LLMResource(base_url=server.base_url, max_concurrency=1, **FAST))
    [flagged] = enricher(_cases(1))
    assert not flagged.ok and flagged.error_kind == "truncated" and flagged.calls == 2
    first, reask = [r["body"] for r in server.chat_requests]
    assert (first["max_tokens"], reask["max_tokens"]) == (512, 1024)
    assert reask["messages"][:-1] == first["messages"] and "cut off" in reask["messages"][-1]["content"]
    server.set_faults(["truncated"])
    [recovered] = enricher(_cases(1))
    assert recovered.ok and recovered.calls == 2


def test_fenced_json_with_prose_and_answers_without_json_are_handled(openai_server):
    server = openai_server(slots=1, faults=["fenced", "prose", "prose"])
    enricher = LLMEnricher(LLMResource(base_url=server.base_url, max_concurrency=1, **FAST))
    fenced, prose = enricher(_cases(2))
    assert fenced.ok and fenced.calls == 1
    assert not prose.ok and prose.error_kind == "invalid_output" and prose.calls == 2
    assert "after one re-ask" in prose.error


def test_with_ten_percent_injected_errors_no_case_is_lost(openai_server):
    server = openai_server(slots=16, latency_s=0.005, timeout_sleep_s=1.0, seed=3, fault_rates={
        "http_500": 0.03, "http_429": 0.02, "timeout": 0.01, "drop": 0.01, "truncated": 0.02, "prose": 0.01})
    llm = LLMResource(base_url=server.base_url, max_concurrency=16, request_timeout_s=0.4, max_retries=3, **FAST)
    cases = _cases(300)
    results = LLMEnricher(llm)(cases)
    assert [r.event_id for r in results] == [c.event_id for c in cases]
    assert all(r.ok or r.error_kind in ERROR_KINDS for r in results)
    stats = BatchStats.from_results(results)
    assert stats.ok >= 297  # retries and re-asks absorb nearly everything; the rest is flagged, not lost
    assert sum(f is not None for f in server.faults_served) >= 20  # the faults really happened


def test_no_planted_pii_ever_reaches_the_server(openai_server, sample_messages, kb_documents, case_from_message):
    messages = [m for m in sample_messages if m.pii][:300]
    assert {kind for m in messages for p in m.pii for kind in find_pii(p)} == set(PII_KINDS)
    resolved = [d for d in kb_documents if d["type"] == "resolved_case"]
    cases = [case_from_message(m, retrieved=resolved[i % len(resolved):][:3] + kb_documents[:2])
             for i, m in enumerate(messages)]
    server = openai_server(slots=32)
    results = LLMEnricher(LLMResource(base_url=server.base_url, max_concurrency=32))(cases)
    assert len(results) == len(cases) and all(r.ok for r in results)

    sent = "\n".join(json.dumps(r["body"], ensure_ascii=False) for r in server.requests)
    leaked = [p for m in messages for p in m.pii if p in sent]
    assert leaked == []
    for request in server.chat_requests:
        assert find_pii(request["body"]["messages"][1]["content"]) == []


def test_a_strategy_that_loses_a_case_gets_it_flagged_not_dropped():
    cases = _cases(3)
    answered = [CaseResult(c.event_id, "s", "other", 0.6, [], 1, True) for c in reversed(cases[1:])]
    results = pipeline.align_results(cases, answered, "a strategy")
    assert [r.event_id for r in results] == [c.event_id for c in cases]
    assert [r.ok for r in results] == [False, True, True] and results[0].error_kind == "backend_error"


# -- backends and configuration --------------------------------------------------------------------

def test_without_a_base_url_the_transport_is_not_configured_and_the_enricher_refuses_it():
    assert LLMResource().resolved_backend() == "none" and not LLMResource().configured
    assert not LLMResource(backend="local", base_url="http://vllm:8000/v1").configured
    assert LLMResource(base_url="http://vllm:8000/v1").resolved_backend() == "server"
    assert LLMResource(backend="offline", model="m").resolved_backend() == "offline"
    with pytest.raises(ValueError, match="one of"):
        LLMResource(backend="cloud").resolved_backend()
    with pytest.raises(ValueError, match="base_url"):
        LLMResource(backend="server").resolved_backend()
    with pytest.raises(ValueError, match="local strategy"):
        LLMEnricher(LLMResource())
    with pytest.raises(RuntimeError, match="not configured"):
        LLMResource().complete(_requests(1))


def test_every_transport_error_kind_is_a_kind_the_domain_knows():
    assert set(transport.ERROR_KINDS) <= set(ERROR_KINDS)


def test_health_check_names_the_url_when_the_server_is_down_unhealthy_or_lacks_the_model(openai_server):
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LLMServerUnavailable, match=down):
        LLMResource(base_url=down).check_health()
    sick = openai_server(healthy=False)
    with pytest.raises(LLMServerUnavailable, match=f"{sick.base_url}/health"):
        LLMResource(base_url=sick.base_url).check_health()
    ok = openai_server()
    with pytest.raises(LLMServerUnavailable, match="does not serve model 'llama'"):
        LLMResource(base_url=ok.base_url, model="llama").check_health()
    assert LLMResource(base_url=ok.base_url).check_health()["models"] == ["test-model"]


def test_an_asset_enriches_through_the_transport_and_a_dead_server_stops_the_run_at_setup(openai_server):
    @dg.asset
    def enriched_sample(llm: LLMResource) -> dg.MaterializeResult:
        """Enrich five cases and report the batch."""
        results = LLMEnricher(llm)(_cases(5))
        return dg.MaterializeResult(metadata={**BatchStats.from_results(results).as_metadata(),
                                              "model_version": versions_for(describe(llm)).model_version})

    server = openai_server(slots=4)
    result = dg.materialize([enriched_sample], resources={"llm": LLMResource(base_url=server.base_url)})
    metadata = result.asset_materializations_for_node("enriched_sample")[0].metadata
    assert metadata["llm_ok"].value == 5 and metadata["model_version"].value == "vllm:test-model"

    dead = LLMResource(base_url=f"http://127.0.0.1:{free_port()}")
    failed = dg.materialize([enriched_sample], resources={"llm": dead}, raise_on_error=False)
    assert not failed.success


def test_the_offline_session_answers_requests_sent_together_in_one_engine_call():
    calls: list[int] = []

    def engine(requests: list[LLMRequest]) -> list[LLMAnswer]:  # the vLLM `chat` call's place
        calls.append(len(requests))
        return [LLMAnswer(text=r.messages[0]["content"].upper(), attempts=1) for r in requests]

    async def run() -> tuple[list[LLMAnswer], LLMAnswer]:
        async with OfflineSession(engine) as session:
            wave = await asyncio.gather(*(session.complete(LLMRequest([{"role": "user", "content": f"q{i}"}]))
                                          for i in range(5)))
            later = await session.complete(LLMRequest([{"role": "user", "content": "re-ask"}]))
        return wave, later

    wave, later = asyncio.run(run())
    assert [a.text for a in wave] == ["Q0", "Q1", "Q2", "Q3", "Q4"] and later.text == "RE-ASK"
    assert calls == [5, 1]


def test_the_offline_backend_without_vllm_says_what_to_install():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(RuntimeError, match="gpu"):
        LLMEnricher(LLMResource(backend="offline", model="m"))(_cases(2))


@pytest.mark.gpu
def test_the_offline_backend_runs_vllm_in_process():
    pytest.importorskip("vllm")
    import os

    model = os.environ.get("LLM_OFFLINE_TEST_MODEL")
    if not model:
        pytest.skip("set LLM_OFFLINE_TEST_MODEL to a small local chat model to run vLLM offline")
    results = LLMEnricher(LLMResource(backend="offline", model=model), max_tokens=384)(_cases(5))
    assert len(results) == 5
    assert all(r.ok or r.error_kind in ERROR_KINDS for r in results)
    assert any(r.ok for r in results)
