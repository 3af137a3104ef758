"""`vllm_metrics_sensor` against the OpenAI-compatible test server's `/metrics` (the vLLM stand-in)."""

from __future__ import annotations

import threading
import time

import dagster as dg
import httpx
import pytest

from llm_assets.asset_keys import ENRICHED_CASES
from llm_assets.sensors.vllm_metrics import (
    build_vllm_metrics_sensor,
    metrics_url,
    parse_vllm_metrics,
    vllm_metrics_sensor,
)
from tests.support.openai_test_server import OpenAITestServer

pytestmark = pytest.mark.integration


def _tick(base_url: str | None, cursor: str | None = None, api_key: str | None = None):
    sensor = build_vllm_metrics_sensor(base_url, api_key)
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor,
                                      sensor_name=sensor.name)
    return sensor.evaluate_tick(context)


def _observation(tick) -> dict:
    [event] = tick.asset_events
    assert isinstance(event, dg.AssetObservation) and event.asset_key == ENRICHED_CASES
    return {k: v.value for k, v in event.metadata.items()}


def _chat(base_url: str, text: str) -> dict:
    response = httpx.post(f"{base_url}/v1/chat/completions", timeout=60, json={
        "model": "test-model", "messages": [{"role": "user", "content": f"<case>{text}</case>"}]})
    response.raise_for_status()
    return response.json()["usage"]


def test_requests_running_and_waiting_are_observed_on_enriched_cases():
    def wait_for_an_answer(base_url: str) -> None:
        try:
            _chat(base_url, "late remittance")
        except httpx.HTTPError:  # the server stops under the waiting requests at the end: expected
            pass

    with OpenAITestServer(slots=1, latency_s=60) as server:  # one slot, held until the server stops
        base_url = server.base_url
        threads = [threading.Thread(target=wait_for_an_answer, args=(base_url,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30  # wait until all three reached the server (not a timing assertion)
        while time.monotonic() < deadline and parse_vllm_metrics(server.prometheus_metrics()).requests_waiting < 2:
            time.sleep(0.05)

        tick = _tick(f"{base_url}/v1")
    for thread in threads:
        thread.join(timeout=30)

    metadata = _observation(tick)
    assert metadata["vllm/num_requests_running"] == 1
    assert metadata["vllm/num_requests_waiting"] == 2
    assert metadata["vllm/kv_cache_usage"] == 1.0
    assert metadata["vllm/models"] == "test-model"
    assert metadata["vllm/metrics_url"] == f"{base_url}/metrics"


def test_token_counters_and_the_tokens_since_the_last_tick_match_what_the_server_answered():
    with OpenAITestServer(slots=4) as server:
        url = f"{server.base_url}/v1"
        first = [_chat(server.base_url, t) for t in ("fraud on a card", "partner fee schedule", "routed to wrong team")]
        tick = _tick(url, api_key="sk-test")
        metadata = _observation(tick)
        assert metadata["vllm/prompt_tokens_total"] == sum(u["prompt_tokens"] for u in first)
        assert metadata["vllm/generation_tokens_total"] == sum(u["completion_tokens"] for u in first)
        assert "vllm/generation_tokens_per_s" not in metadata  # nothing to compare with yet

        second = [_chat(server.base_url, t) for t in ("null amount column", "duplicate payout")]
        metadata = _observation(_tick(url, cursor=tick.cursor))
        assert metadata["vllm/prompt_tokens_since_last_tick"] == sum(u["prompt_tokens"] for u in second)
        assert metadata["vllm/generation_tokens_since_last_tick"] == sum(u["completion_tokens"] for u in second)
        assert metadata["vllm/generation_tokens_per_s"] > 0
        assert metadata["vllm/num_requests_running"] == 0 and metadata["vllm/num_requests_waiting"] == 0


def test_the_sensor_skips_with_a_reason_without_a_server_url_or_when_the_server_is_down(monkeypatch):
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    unset = vllm_metrics_sensor.evaluate_tick(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))
    assert not unset.asset_events and "LLM_BASE_URL is unset" in unset.skip_message

    server = OpenAITestServer().start()
    base_url = server.base_url
    server.stop()
    monkeypatch.setenv("LLM_BASE_URL", f"{base_url}/v1")  # read at the tick, not at import
    down = vllm_metrics_sensor.evaluate_tick(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))
    assert not down.asset_events and down.skip_message.startswith(f"vLLM is down or unreachable at {base_url}/metrics")


def test_parsing_reads_vllms_exposition_across_engines_and_both_cache_gauge_names():
    text = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 7.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="qwen"} 0.25
vllm:gpu_cache_usage_perc{engine="1",model_name="qwen"} 0.75
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="qwen"} 1200.0
vllm:prompt_tokens_created{engine="0",model_name="qwen"} 1.7e+09
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="qwen"} 300.0
"""
    load = parse_vllm_metrics(text)
    assert (load.requests_running, load.requests_waiting, load.kv_cache_usage) == (5.0, 7.0, 0.75)
    assert (load.prompt_tokens_total, load.generation_tokens_total, load.models) == (1200.0, 300.0, ("qwen",))
    with pytest.raises(ValueError, match="num_requests_running"):
        parse_vllm_metrics("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.0\n")
    assert metrics_url("http://vllm:8000/v1/") == "http://vllm:8000/metrics"
    assert metrics_url("http://vllm:8000") == "http://vllm:8000/metrics"


def test_the_sensor_loads_in_definitions():
    defs = dg.Definitions(sensors=[vllm_metrics_sensor])
    assert defs.resolve_sensor_def("vllm_metrics_sensor").name == "vllm_metrics_sensor"
