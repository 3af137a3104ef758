"""Cost of enrichment: LLM calls per case with the embedding gate, and the result cache.

1. Golden set (200 labelled cases) through `pipeline.enrich_cases` with the real embedding
   model and gate, against the OpenAI-compatible test server (the stand-in for vLLM):
   calls per case with the gate (goal <= 0.5; the naive orchestration makes 3) and the
   accuracy of gate-routed cases (goal >= 0.95); calls per case of the combined call mode
   vs the per-skill mode without the gate.
2. `enriched/cases` materialized twice on the same partition (real Delta, Milvus Lite,
   tansu), the second time with `full_refresh` (an incremental re-run of an unchanged
   partition does nothing at all: "0 new cases"; benchmarks/enrichment_incremental.py
   measures that path): the refresh is served from the cache (every row keeps the route
   that decided it, with `served_from_cache`); prints requests sent, the routes and the
   speed-up (goal >= 20x). The server has S slots and latency L per request (defaults 32, 1.0 s: a
   7B model writing ~150 JSON tokens answers in about that under batching).

Run: `.venv/bin/python -W ignore benchmarks/enrichment_gate_cache.py [--events 1000 --latency 1.0]`.
"""

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import polars as pl  # noqa: E402

from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES  # noqa: E402


def golden_costs(embedder, server_url: str) -> None:
    from llm_assets.llm import pipeline
    from llm_assets.gate.model import texts_fingerprint, train_gate, training_examples
    from llm_assets.lib.redaction import redact_cached
    from llm_assets.llm.llm_enricher import LLMEnricher
    from llm_assets.resources.llm import LLMResource
    from llm_assets.domain.packs.payments_ops.sample_data.generator import golden_cases, kb_corpus

    examples = training_examples(kb_corpus()["resolved_cases"])
    texts = [redact_cached(t) for t in examples.texts]
    gate = train_gate(embedder.encode(texts), examples.labels, texts_sha256=texts_fingerprint(texts),
                      source_description="sample KB")
    rows = golden_cases(200)
    truth = {r["event_id"]: r["label"] for r in rows}
    frame = pl.DataFrame({"event_id": list(truth), "payload_raw": [r["payload_raw"] for r in rows],
                          "source_system": [r["source_system"] for r in rows],
                          "partner_id": [r["partner_id"] for r in rows]})
    versions = pipeline.Versions("m", "p", "k")

    def run(gate_model, call_mode):
        llm = LLMEnricher(LLMResource(base_url=server_url, max_concurrency=32), call_mode=call_mode)
        return pipeline.enrich_cases(frame, day="golden", versions=versions, embed=embedder.encode,
                                     retrieve=lambda v: [[] for _ in range(len(v))], gate=gate_model, llm=llm)

    gated_run = run(gate, "combined")
    gated = [r for r in gated_run.rows if r["route"] == "gate"]
    accuracy = sum(r["label"] == truth[r["event_id"]] for r in gated) / max(1, len(gated))
    print(f"golden set, gate at {gated_run.gate_threshold}: {len(gated)}/{len(rows)} cases gated")
    print(f"  calls per case with gate + combined call: {gated_run.calls_per_case():.3f}  (goal <= 0.5; naive 3)")
    print(f"  accuracy of gate-routed cases:            {accuracy:.3f}  (goal >= 0.95)")
    for mode in ("combined", "per_skill"):
        print(f"  calls per case without gate, {mode:<9}:   {run(None, mode).calls_per_case():.3f}")


def cache_speedup(embedder, server, events: int) -> None:
    import dagster as dg

    from llm_assets import settings
    from llm_assets.dev.broker import create_topics, start_broker
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.resources.kafka import KafkaResource
    from llm_assets.resources.llm import LLMResource
    from llm_assets.resources.milvus import MilvusResource
    from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
    from tests.support.pipeline import artifact_resources, materialize_keys, write_raw_events

    home = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    os.environ.update(LLM_ASSETS_HOME=str(home), SAMPLE_DATA_DIR=str(home / "sample_data"))
    generate_sample_data(home / "sample_data", n_events=events, days=1)
    broker = start_broker()
    try:
        create_topics(broker.bootstrap, {settings.ENRICHED_TOPIC: 3})
        resources = {"delta": DeltaLakeStorage(root=str(home / "delta")),
                     "milvus": MilvusResource(uri=str(home / "milvus" / "kb.db")), "embedder": embedder,
                     "kafka": KafkaResource(bootstrap_servers=broker.bootstrap),
                     "llm": LLMResource(base_url=server.base_url, max_concurrency=32), **artifact_resources(home)}
        day = next(iter(write_raw_events(resources["delta"], home / "sample_data")))
        instance = dg.DagsterInstance.ephemeral()  # one instance for both runs, as a deployment has
        quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

        def materialize(keys, partition_key=None, config=None):
            run_config = {**quiet, **({"ops": {"enriched__cases": {"config": config}}} if config else {})}
            result = materialize_keys(resources, keys, partition_key=partition_key, run_config=run_config,
                                      instance=instance)
            assert result.success
            return result

        materialize(["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index",
                     "models/embedding_gate"])
        materialize(["curated/cases"], partition_key=day)
        cases = resources["delta"].count(CURATED_CASES, partition_column="event_date", partition_value=day)

        timings = []
        for attempt, full_refresh in (("first (cold cache)", False), ("second (full refresh, cached)", True)):
            before = len(server.chat_requests)
            started = time.perf_counter()
            materialize(["enriched/cases"], partition_key=day, config={"use_gate": False, "full_refresh": full_refresh})
            timings.append(time.perf_counter() - started)
            rows = resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day])
            routes = dict(sorted(Counter(rows["route"].to_list()).items()))
            print(f"  {attempt:<30} {timings[-1]:7.2f} s, {len(server.chat_requests) - before:5d} LLM requests, "
                  f"routes {routes}, served from cache {rows['served_from_cache'].mean():.0%}")
        print(f"cache: {cases} cases; second materialization {timings[0] / timings[1]:.1f}x faster (goal >= 20x)")
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()

    from llm_assets.resources.embedder import EmbedderResource
    from tests.support.openai_test_server import OpenAITestServer

    embedder = EmbedderResource()
    with OpenAITestServer(slots=args.slots, latency_s=0.0) as fast_server:
        golden_costs(embedder, fast_server.base_url)
    with OpenAITestServer(slots=args.slots, latency_s=args.latency) as server:
        print(f"test server: {args.slots} slots, {args.latency} s per request")
        cache_speedup(embedder, server, args.events)


if __name__ == "__main__":
    main()
