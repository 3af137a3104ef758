"""Cost of `enriched/cases` per micro-batch as one day grows.

B batches of N cases land in one day (default 10 x 100). After each batch, `curated/cases`
and then `enriched/cases` run on that day (incremental, as the sensor's runs do), on real
Delta, Milvus Lite and tansu, against the OpenAI-compatible test server (the stand-in for
vLLM; S slots, L s per request) with the gate off, so every new case costs one LLM call.
Prints, per batch: the day's size, the seconds of the enrichment run, LLM requests, cases
written and published. Goal: flat per batch, not growing with the partition (before, each run
re-enriched and republished the whole day). Then one `full_refresh` of the whole day (the
backfill / version-change path, served from the cache) for comparison, and an incremental
re-run with nothing new ("0 new cases").

Run: `.venv/bin/python -W ignore benchmarks/enrichment_incremental.py [--batches 10 --batch-size 100]`.
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import polars as pl  # noqa: E402

from llm_assets.asset_keys import RAW_EVENTS  # noqa: E402


def _raw_frame(sample_dir: Path) -> pl.DataFrame:
    from llm_assets.ingest import contract
    from llm_assets.domain.packs.payments_ops.sample_data.generator import load_messages
    from tests.support import contract_reference

    now = datetime.now(timezone.utc)
    rows = []
    for offset, m in enumerate(load_messages(sample_dir)):
        event = contract_reference.validate_event(m.value)
        if isinstance(event, contract_reference.ValidEvent):
            rows.append(contract_reference.event_row(event, topic="events.raw", partition=0, offset=offset,
                                                     ingested_at=now))
    return contract.events_frame(rows).unique("event_id", keep="last").sort("event_id")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    from llm_assets import settings
    from llm_assets.dev.broker import create_topics, start_broker
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.resources.embedder import EmbedderResource
    from llm_assets.resources.kafka import KafkaResource
    from llm_assets.resources.llm import LLMResource
    from llm_assets.resources.milvus import MilvusResource
    from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
    from tests.support.openai_test_server import OpenAITestServer
    from tests.support.pipeline import artifact_resources, materialize_keys

    import dagster as dg

    home = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    os.environ.update(LLM_ASSETS_HOME=str(home), SAMPLE_DATA_DIR=str(home / "sample_data"))
    # Generous: about 5% of the sample events are invalid on purpose.
    generate_sample_data(home / "sample_data", n_events=int(args.batches * args.batch_size * 1.1) + 20, days=1)
    raw = _raw_frame(home / "sample_data")
    day = raw["event_date"].mode().sort()[0]
    raw = raw.filter(pl.col("event_date") == day).head(args.batches * args.batch_size)

    broker = start_broker()
    with OpenAITestServer(slots=args.slots, latency_s=args.latency) as server:
        try:
            create_topics(broker.bootstrap, {settings.ENRICHED_TOPIC: 3})
            resources = {"delta": DeltaLakeStorage(root=str(home / "delta")),
                         "milvus": MilvusResource(uri=str(home / "milvus" / "kb.db")), "embedder": EmbedderResource(),
                         "kafka": KafkaResource(bootstrap_servers=broker.bootstrap),
                         "llm": LLMResource(base_url=server.base_url, max_concurrency=args.slots),
                         **artifact_resources(home)}
            instance = dg.DagsterInstance.ephemeral()
            quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

            def materialize(keys, config=None, partition_key=day):
                run_config = {**quiet, **({"ops": {"enriched__cases": {"config": config}}} if config else {})}
                result = materialize_keys(resources, keys, partition_key=partition_key, run_config=run_config,
                                          instance=instance)
                assert result.success
                return result

            def enrich(config):
                before = len(server.chat_requests)
                started = time.perf_counter()
                result = materialize(["enriched/cases"], {"use_gate": False, **config})
                seconds = time.perf_counter() - started
                meta = {k: v.value for k, v in result.asset_materializations_for_node("enriched__cases")[0]
                        .metadata.items()}
                return seconds, len(server.chat_requests) - before, meta

            materialize(["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index",
                         "models/embedding_gate"], partition_key=None)
            resources["embedder"].encode(["warm-up"])  # the model loads once, outside the timings

            print(f"test server: {args.slots} slots, {args.latency} s per request; gate off; day {day}")
            print(f"{'batch':>5} {'day size':>9} {'enrich s':>9} {'LLM requests':>13} {'written':>8} {'published':>10}")
            timings = []
            for b in range(args.batches):
                batch = raw.slice(b * args.batch_size, args.batch_size)
                resources["delta"].merge(RAW_EVENTS, batch, ["event_id"], partition_column="event_date",
                                         partition_value=day)
                materialize(["curated/cases"])
                seconds, requests, meta = enrich({})
                timings.append(seconds)
                print(f"{b + 1:>5} {meta['dagster/row_count']:>9} {seconds:>9.2f} {requests:>13} "
                      f"{meta['cases_written']:>8} {meta['published_to_cases_enriched']:>10}")
            print(f"enrichment per batch: first {timings[0]:.2f} s, last {timings[-1]:.2f} s, "
                  f"last/first {timings[-1] / timings[0]:.2f} (goal: about 1, flat as the day grows)")

            seconds, requests, meta = enrich({})
            print(f"re-run, nothing new: {seconds:.2f} s, {requests} LLM requests, {meta['summary']}, "
                  f"{meta['published_to_cases_enriched']} published")
            seconds, requests, meta = enrich({"full_refresh": True})
            print(f"full_refresh of the whole day ({meta['dagster/row_count']} cases, cached): {seconds:.2f} s, "
                  f"{requests} LLM requests, {meta['published_to_cases_enriched']} published "
                  f"(what every micro-batch cost before, without the LLM calls)")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
