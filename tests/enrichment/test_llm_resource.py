"""`LLMResource` against the OpenAI-compatible test server, over real HTTP."""

from __future__ import annotations

import json
import time

import dagster as dg
import pytest

from llm_assets.enrichment import prompts
from llm_assets.enrichment.redaction import PII_KINDS, find_pii
from llm_assets.enrichment.types import ERROR_KINDS, BatchStats, CaseContext, CaseResult
from llm_assets.local_process import free_port
from llm_assets.resources.llm import (
    CircuitBreaker,
    LLMResource,
    LLMServerUnavailable,
    OfflineAnswer,
    offline_results,
)

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


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



# -- requests and answers --------------------------------------------------------------------------

def test_every_request_carries_the_skill_json_schema_and_one_call_enriches_a_case(openai_server):
    server = openai_server(slots=4)
    llm = LLMResource(base_url=f"{server.base_url}/v1", model="test-model", max_concurrency=4)
    results = llm.run_cases(_cases(5))
    assert [r.label for r in results] == ["fraud_suspected", "partner_mismatch", "data_quality",
                                          "routing_error", "other"]
    assert all(r.ok and r.calls == 1 and r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)
    bodies = [r["body"] for r in server.chat_requests]
    assert len(bodies) == 5
    for body in bodies:
        assert body["model"] == "test-model"
        assert body["response_format"] == prompts.ENRICH_CASE.response_format()
    assert llm.prompt_version() == "enrich_case@v1"


def test_per_skill_mode_sends_three_schema_constrained_calls_per_case(openai_server):
    server = openai_server(slots=8)
    llm = LLMResource(base_url=server.base_url, call_mode="per_skill", max_concurrency=8)
    [result] = llm.run_cases(_cases(1))
    assert result.ok and result.calls == 3 and result.label == "fraud_suspected" and result.summary
    assert result.actions and result.severity == 5
    names = sorted(r["body"]["response_format"]["json_schema"]["name"] for r in server.chat_requests)
    assert names == ["classify", "propose_actions", "summarize"]
    assert llm.prompt_version() == "summarize@v1+classify@v1+propose_actions@v1"


def test_concurrency_never_exceeds_the_limit(openai_server):
    server = openai_server(slots=32, latency_s=0.03)
    llm = LLMResource(base_url=server.base_url, max_concurrency=4)
    results = llm.run_cases(_cases(40))
    assert all(r.ok for r in results)
    assert 1 < server.max_concurrency <= 4


def test_server_errors_overload_timeouts_and_dropped_connections_are_retried(openai_server):
    server = openai_server(slots=1, faults=["http_500", "timeout", "http_429", "drop"], timeout_sleep_s=1.0)
    llm = LLMResource(base_url=server.base_url, max_concurrency=1, request_timeout_s=0.3, max_retries=4, **FAST)
    [result] = llm.run_cases(_cases(1))
    assert result.ok and result.label == "fraud_suspected"
    assert result.calls == 5
    assert server.faults_served == ["http_500", "timeout", "http_429", "drop", None]


def test_a_case_that_keeps_failing_is_flagged_after_the_last_retry(openai_server):
    server = openai_server(slots=1, faults=["http_500"] * 3)
    llm = LLMResource(base_url=server.base_url, max_concurrency=1, max_retries=2, **FAST)
    [result] = llm.run_cases(_cases(1))
    assert not result.ok and result.error_kind == "http_5xx" and result.calls == 3
    assert result.redacted_prompt_sha256  # provenance is kept for failed cases too


def test_a_rejected_request_is_not_retried(openai_server):
    server = openai_server(slots=1, api_key="right-key")
    llm = LLMResource(base_url=server.base_url, model="test-model", api_key="wrong-key", max_concurrency=1, **FAST)
    [result] = llm.run_cases(_cases(1))
    assert not result.ok and result.error_kind == "http_4xx" and result.calls == 1


def test_the_api_key_is_sent_as_a_bearer_token(openai_server):
    server = openai_server(slots=1, api_key="s3cret")
    llm = LLMResource(base_url=server.base_url, api_key="s3cret")
    assert llm.model_version() == "vllm:test-model"  # discovered from /v1/models
    assert llm.run_cases(_cases(1))[0].ok
    assert server.chat_requests[0]["headers"]["Authorization"] == "Bearer s3cret"


def test_truncated_json_is_retried_once_then_flagged(openai_server):
    server = openai_server(slots=1, faults=["truncated", "truncated"])
    llm = LLMResource(base_url=server.base_url, max_concurrency=1, **FAST)
    [flagged] = llm.run_cases(_cases(1))
    assert not flagged.ok and flagged.error_kind == "truncated" and flagged.calls == 2
    server.set_faults(["truncated"])
    [recovered] = llm.run_cases(_cases(1))
    assert recovered.ok and recovered.calls == 2


def test_fenced_json_with_prose_and_answers_without_json_are_handled(openai_server):
    server = openai_server(slots=1, faults=["fenced", "prose", "prose"])
    llm = LLMResource(base_url=server.base_url, max_concurrency=1, **FAST)
    fenced, prose = llm.run_cases(_cases(2))
    assert fenced.ok and fenced.calls == 1
    assert not prose.ok and prose.error_kind == "invalid_output" and prose.calls == 2


# -- circuit breaker -------------------------------------------------------------------------------

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


def test_the_breaker_opens_on_a_failing_server_fails_fast_and_closes_after_a_good_probe(openai_server):
    server = openai_server(slots=1, fault_rates={"http_500": 1.0})
    llm = LLMResource(base_url=server.base_url, model="test-model", max_concurrency=1, max_retries=0,
                      breaker_failure_threshold=3, breaker_reset_s=0.3, **FAST)
    results = llm.run_cases(_cases(8))
    assert [r.error_kind for r in results] == ["http_5xx"] * 3 + ["circuit_open"] * 5
    assert len(server.chat_requests) == 3  # nothing is sent while the breaker is open
    assert llm.breaker.state == "open"

    server.set_faults(fault_rates={})  # the server recovers
    time.sleep(0.35)  # wait out breaker_reset_s (a wait, not a timing assertion)
    results = llm.run_cases(_cases(4, prefix="after"))
    assert all(r.ok for r in results)
    assert llm.breaker.state == "closed"


def test_with_ten_percent_injected_errors_no_case_is_lost(openai_server):
    server = openai_server(slots=16, latency_s=0.005, timeout_sleep_s=1.0, seed=3, fault_rates={
        "http_500": 0.03, "http_429": 0.02, "timeout": 0.01, "drop": 0.01, "truncated": 0.02, "prose": 0.01})
    llm = LLMResource(base_url=server.base_url, max_concurrency=16, request_timeout_s=0.4, max_retries=3, **FAST)
    cases = _cases(300)
    results = llm.run_cases(cases)
    assert [r.event_id for r in results] == [c.event_id for c in cases]
    assert all(r.ok or r.error_kind in ERROR_KINDS for r in results)
    stats = BatchStats.from_results(results)
    assert stats.ok >= 297  # retries absorb nearly everything; the rest is flagged, not lost
    assert sum(f is not None for f in server.faults_served) >= 20  # the faults really happened


def test_no_planted_pii_ever_reaches_the_server(openai_server, sample_messages, kb_documents, case_from_message):
    messages = [m for m in sample_messages if m.pii][:300]
    assert {kind for m in messages for p in m.pii for kind in find_pii(p)} == set(PII_KINDS)
    resolved = [d for d in kb_documents if d["type"] == "resolved_case"]
    cases = [case_from_message(m, retrieved=resolved[i % len(resolved):][:3] + kb_documents[:2])
             for i, m in enumerate(messages)]
    server = openai_server(slots=32)
    results = LLMResource(base_url=server.base_url, max_concurrency=32).run_cases(cases)
    assert len(results) == len(cases) and all(r.ok for r in results)

    sent = "\n".join(json.dumps(r["body"], ensure_ascii=False) for r in server.requests)
    leaked = [p for m in messages for p in m.pii if p in sent]
    assert leaked == []
    for request in server.chat_requests:
        assert find_pii(request["body"]["messages"][1]["content"]) == []


# -- backends and configuration --------------------------------------------------------------------

def test_backend_is_derived_from_base_url_and_validated():
    assert LLMResource().resolved_backend() == "local"
    assert LLMResource(base_url="http://vllm:8000/v1").resolved_backend() == "server"
    assert LLMResource(backend="offline", model="m").model_version() == "offline:m"
    assert LLMResource().model_version() == "local-rules"
    with pytest.raises(ValueError, match="one of"):
        LLMResource(backend="cloud").resolved_backend()
    with pytest.raises(ValueError, match="base_url"):
        LLMResource(backend="server").resolved_backend()


def test_the_local_backend_delegates_and_still_returns_every_case_in_order():
    cases = _cases(3)

    def rules(batch: list[CaseContext]) -> list[CaseResult]:  # answers out of order and forgets one
        return [CaseResult(c.event_id, "s", "other", 0.6, [], 1, True) for c in reversed(batch[1:])]

    results = LLMResource().run_cases(cases, local_enricher=rules)
    assert [r.event_id for r in results] == [c.event_id for c in cases]
    assert [r.ok for r in results] == [False, True, True]
    assert results[0].error_kind == "backend_error"
    with pytest.raises(ValueError, match="local_enricher"):
        LLMResource().run_cases(cases)


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


def test_an_unreachable_server_flags_cases_instead_of_raising():
    llm = LLMResource(base_url=f"http://127.0.0.1:{free_port()}", model="m", max_retries=1, **FAST)
    results = llm.run_cases(_cases(3))
    assert [r.error_kind for r in results] == ["connect"] * 3


def test_an_asset_enriches_through_the_resource_and_a_dead_server_stops_the_run_at_setup(openai_server):
    @dg.asset
    def enriched_sample(llm: LLMResource) -> dg.MaterializeResult:
        """Enrich five cases and report the batch."""
        results = llm.run_cases(_cases(5))
        return dg.MaterializeResult(metadata={**BatchStats.from_results(results).as_metadata(),
                                              "model_version": llm.model_version()})

    server = openai_server(slots=4)
    result = dg.materialize([enriched_sample], resources={"llm": LLMResource(base_url=server.base_url)})
    metadata = result.asset_materializations_for_node("enriched_sample")[0].metadata
    assert metadata["llm_ok"].value == 5 and metadata["model_version"].value == "vllm:test-model"

    dead = LLMResource(base_url=f"http://127.0.0.1:{free_port()}")
    failed = dg.materialize([enriched_sample], resources={"llm": dead}, raise_on_error=False)
    assert not failed.success


def test_offline_answers_become_results_and_truncation_is_flagged():
    cases = _cases(3)
    templates = prompts.templates_for("combined")
    conversations = {"enrich_case": [prompts.build_messages(prompts.ENRICH_CASE, c) for c in cases]}
    good = json.dumps({"summary": "s", "label": "other", "confidence": 0.7, "severity": 1,
                       "actions": [{"action": "notify", "reason": "r", "approval_level": "analyst"}]})
    answers = {"enrich_case": [OfflineAnswer(good, "stop", 100, 20), OfflineAnswer(good[:30], "length", 100, 512),
                               OfflineAnswer("no json", "stop", 100, 3)]}
    results = offline_results(cases, templates, conversations, answers, elapsed_s=3.0)
    assert results[0].ok and results[0].label == "other" and results[0].latency_s == 1.0
    assert (results[1].error_kind, results[2].error_kind) == ("truncated", "invalid_output")
    assert results[0].redacted_prompt_sha256 == prompts.prompt_sha256(conversations["enrich_case"][0])


@pytest.mark.gpu
def test_the_offline_backend_runs_vllm_in_process():
    pytest.importorskip("vllm")
    import os

    model = os.environ.get("LLM_OFFLINE_TEST_MODEL")
    if not model:
        pytest.skip("set LLM_OFFLINE_TEST_MODEL to a small local chat model to run vLLM offline")
    results = LLMResource(backend="offline", model=model, max_tokens=384).run_cases(_cases(5))
    assert len(results) == 5
    assert all(r.ok or r.error_kind in ERROR_KINDS for r in results)
    assert any(r.ok for r in results)
