"""`vllm_metrics_sensor`: vLLM's own load figures as observations of `enriched/cases`.

Each tick reads the server's Prometheus `/metrics` (the root of `LLM_BASE_URL` without `/v1`)
and records requests running and waiting, KV-cache usage and the token counters as an
`AssetObservation` of `enriched/cases`, so the asset page shows how loaded the LLM was next
to what the enrichment did. Token throughput comes from the counters of the previous tick,
kept in the cursor. The base URL and API key are the sensor's configuration: by default
`LLM_BASE_URL` and `LLM_API_KEY` as `EnvVar`s, read at each tick (never at import), the same
variables the `llm` resource is bound to.

Through a Kubernetes Service the sensor sees one replica per tick: fleet-wide figures belong
to Prometheus scraping every pod (docs/operations.md); this is the glance from the Dagster UI.
"""

import json
import math
import time
from dataclasses import asdict, dataclass

import dagster as dg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from llm_assets.asset_keys import ENRICHED_CASES

# Prometheus family names (counters without their `_total` sample suffix). vLLM renamed the
# cache gauge: `gpu_cache_usage_perc` before V1, `kv_cache_usage_perc` since; both are 0..1.
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"

SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class VllmLoad:
    """One scrape, summed over the server's engines and models (the cache: the fullest engine)."""

    requests_running: float
    requests_waiting: float
    kv_cache_usage: float | None
    prompt_tokens_total: float
    generation_tokens_total: float
    models: tuple[str, ...]


def metrics_url(base_url: str) -> str:
    """`http://vllm:8000/v1` -> `http://vllm:8000/metrics` (vLLM serves metrics at its root)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return f"{root}/metrics"


def parse_vllm_metrics(text: str) -> VllmLoad:
    """The figures the sensor reports, from a Prometheus text exposition.

    Raises ValueError when the text has none of vLLM's request gauges (not a vLLM server).
    """
    sums: dict[str, float] = {}
    cache: list[float] = []
    models: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # A counter's value is its `_total` sample; `_created` timestamps are not counts.
            if family.type == "counter" and not sample.name.endswith("_total"):
                continue
            if math.isnan(sample.value):
                continue
            if "model_name" in sample.labels:
                models.add(sample.labels["model_name"])
            if family.name in KV_CACHE_USAGE:
                cache.append(sample.value)
            elif family.name in (RUNNING, WAITING, PROMPT_TOKENS, GENERATION_TOKENS):
                sums[family.name] = sums.get(family.name, 0.0) + sample.value
    if RUNNING not in sums and WAITING not in sums:
        raise ValueError("no vllm:num_requests_running or vllm:num_requests_waiting in the metrics")
    return VllmLoad(
        requests_running=sums.get(RUNNING, 0.0),
        requests_waiting=sums.get(WAITING, 0.0),
        kv_cache_usage=max(cache) if cache else None,
        prompt_tokens_total=sums.get(PROMPT_TOKENS, 0.0),
        generation_tokens_total=sums.get(GENERATION_TOKENS, 0.0),
        models=tuple(sorted(models)),
    )


def token_deltas(previous: dict | None, current: VllmLoad, now: float) -> dict[str, float]:
    """Tokens since the previous tick and per second; nothing after a restart (counters went down)."""
    if not previous:
        return {}
    elapsed = now - previous["at"]
    prompt = current.prompt_tokens_total - previous["prompt_tokens_total"]
    generation = current.generation_tokens_total - previous["generation_tokens_total"]
    if elapsed <= 0 or prompt < 0 or generation < 0:
        return {}
    return {"prompt_tokens_since_last_tick": prompt, "generation_tokens_since_last_tick": generation,
            "prompt_tokens_per_s": round(prompt / elapsed, 2),
            "generation_tokens_per_s": round(generation / elapsed, 2)}


def load_observation(load: VllmLoad, url: str, deltas: dict[str, float]) -> dg.AssetObservation:
    metadata: dict[str, object] = {
        "vllm/metrics_url": dg.MetadataValue.url(url),
        "vllm/num_requests_running": load.requests_running,
        "vllm/num_requests_waiting": load.requests_waiting,
        "vllm/prompt_tokens_total": load.prompt_tokens_total,
        "vllm/generation_tokens_total": load.generation_tokens_total,
        "vllm/models": ", ".join(load.models) or "unknown",
        **{f"vllm/{k}": v for k, v in deltas.items()},
    }
    if load.kv_cache_usage is not None:
        metadata["vllm/kv_cache_usage"] = round(load.kv_cache_usage, 4)
    return dg.AssetObservation(asset_key=ENRICHED_CASES, metadata=metadata)


def _cursor_state(cursor: str | None) -> dict | None:
    try:
        state = json.loads(cursor) if cursor else None
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) and {"at", "prompt_tokens_total"} <= set(state) else None


def _resolve(value: str | dg.EnvVar | None) -> str | None:
    return value.get_value() if isinstance(value, dg.EnvVar) else value


def build_vllm_metrics_sensor(base_url: str | dg.EnvVar | None = dg.EnvVar("LLM_BASE_URL"),
                              api_key: str | dg.EnvVar | None = dg.EnvVar("LLM_API_KEY"), *,
                              name: str = "vllm_metrics_sensor",
                              minimum_interval_seconds: int = 120) -> dg.SensorDefinition:
    """The sensor over the vLLM server at `base_url` (an `EnvVar` is read at each tick).

    It takes the endpoint itself rather than the `llm` resource: that resource checks the server's
    `/health` when it starts, and a server that is down is a reason to skip a tick, not an error.
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="vLLM's /metrics (requests running and waiting, KV-cache usage, token counters and "
                    "throughput) as observations of enriched/cases; skips without an LLM server.",
    )
    def _vllm_metrics_sensor(context: dg.SensorEvaluationContext):
        root = _resolve(base_url)
        if not root:
            return dg.SkipReason("LLM_BASE_URL is unset: no vLLM server to read metrics from (local backend).")
        url = metrics_url(root)
        key = _resolve(api_key)
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {key}"} if key else None,
                                 timeout=SCRAPE_TIMEOUT_S)
            response.raise_for_status()
            load = parse_vllm_metrics(response.text)
        except httpx.HTTPError as exc:
            return dg.SkipReason(f"vLLM is down or unreachable at {url}: {type(exc).__name__}: {exc}. "
                                 "Enrichment falls back to rules while it is.")
        except ValueError as exc:
            return dg.SkipReason(f"{url} is not vLLM's metrics endpoint: {exc}")
        now = time.time()
        deltas = token_deltas(_cursor_state(context.cursor), load, now)
        cursor = json.dumps({"at": now, **{k: v for k, v in asdict(load).items() if k.endswith("_total")}})
        return dg.SensorResult(asset_events=[load_observation(load, url, deltas)], cursor=cursor)

    return _vllm_metrics_sensor


vllm_metrics_sensor = build_vllm_metrics_sensor()
