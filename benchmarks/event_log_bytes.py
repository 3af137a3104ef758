"""Event-log bytes per micro-batch run: what the Dagster instance stores for each of up to 8,640 runs a day.

Micro-batches of `--batch-size` (200) new events land in one day; each goes through `curated/cases`
and `enriched/cases` in one in-process run (local strategy, the gate on), on real Delta, Milvus Lite
and tansu. Runs alternate between a micro-batch run (tagged as `kafka_events_sensor` tags them:
numbers only in the metadata) and the same work untagged (what every run stored before: the routes
picture, a base64 PNG, in each materialization). Printed: the bytes of every event-log record of each
run (serialized as the instance stores them) and of the `enriched/cases` materialization alone, and
the ratio, measured in one process. Goal: <= 20 KB per micro-batch run.

Run: `.venv/bin/python -W ignore benchmarks/event_log_bytes.py [--pairs 3 --batch-size 200]`.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import polars as pl  # noqa: E402

from benchmarks.enrichment_incremental import _raw_frame  # noqa: E402
from llm_assets.asset_keys import RAW_EVENTS  # noqa: E402

GOAL_BYTES = 20_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()

    import dagster as dg
    from dagster_shared.serdes import serialize_value

    from llm_assets import settings
    from llm_assets.dev.broker import create_topics, start_broker
    from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
    from llm_assets.metadata import MICRO_BATCH_TAG
    from llm_assets.partitions import daily_partitions
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.resources.embedder import EmbedderResource
    from llm_assets.resources.kafka import KafkaResource
    from llm_assets.resources.llm import LLMResource
    from llm_assets.resources.milvus import MilvusResource
    from tests.support.pipeline import artifact_resources, graph_definitions, materialize_keys

    home = Path(tempfile.mkdtemp(prefix="bench-event-log-"))
    os.environ.update(LLM_ASSETS_HOME=str(home), SAMPLE_DATA_DIR=str(home / "sample_data"))
    runs = 2 * args.pairs
    generate_sample_data(home / "sample_data", n_events=int(runs * args.batch_size * 1.15) + 20, days=1)
    raw = _raw_frame(home / "sample_data")
    day = raw["event_date"].mode().sort()[0]
    raw = raw.filter(pl.col("event_date") == day).head(runs * args.batch_size)

    broker = start_broker()
    try:
        create_topics(broker.bootstrap, {settings.ENRICHED_TOPIC: 3})
        resources = {"delta": DeltaLakeStorage(root=str(home / "delta")),
                     "milvus": MilvusResource(uri=str(home / "milvus" / "kb.db")), "embedder": EmbedderResource(),
                     "kafka": KafkaResource(bootstrap_servers=broker.bootstrap), "llm": LLMResource(),
                     **artifact_resources(home)}
        instance = dg.DagsterInstance.ephemeral()
        quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        assert materialize_keys(resources, ["features/entity_signals", "signals/exceptions", "kb/documents",
                                            "kb/index", "models/embedding_gate"], run_config=quiet,
                                instance=instance).success
        assets, checks = graph_definitions()
        daily = [a for a in assets if a.partitions_def == daily_partitions] + [
            dg.AssetSpec(["raw", "events"], partitions_def=daily_partitions)]
        daily_checks = [c for c in checks if c.partitions_def == daily_partitions]
        selection = dg.AssetSelection.assets(dg.AssetKey(["curated", "cases"]), dg.AssetKey(["enriched", "cases"]))

        measured = {True: [], False: []}
        for b in range(runs):
            micro = b % 2 == 0
            batch = raw.slice(b * args.batch_size, args.batch_size)
            resources["delta"].merge(RAW_EVENTS, batch, ["event_id"], partition_column="event_date", partition_value=day)
            result = dg.materialize([*daily, *daily_checks], selection=selection, partition_key=day,
                                    resources=resources, run_config=quiet, instance=instance, raise_on_error=False,
                                    tags={MICRO_BATCH_TAG: f"bench-{b}"} if micro else None)
            assert result.success
            records = instance.all_logs(result.run_id)
            total = sum(len(serialize_value(r)) for r in records)
            enriched = sum(len(serialize_value(r)) for r in records
                           if r.dagster_event is not None and r.dagster_event.is_step_materialization
                           and r.dagster_event.asset_key == dg.AssetKey(["enriched", "cases"]))
            measured[micro].append((total, enriched))
            if b == runs - 2:  # the last micro-batch run: where its bytes go
                sizes = sorted(((len(serialize_value(r)), r.dagster_event.event_type_value if r.dagster_event else "log",
                                 r.dagster_event.step_key if r.dagster_event else "") for r in records), reverse=True)
                largest = sizes[:6]
            print(f"run {b + 1}: {'micro-batch' if micro else 'untagged (as before)':<22} {len(batch)} events, "
                  f"{len(records)} event-log records, {total / 1000:.1f} KB (enriched/cases materialization "
                  f"{enriched / 1000:.1f} KB)")
        print("largest records of the last micro-batch run: "
              + "; ".join(f"{kind} {step or ''} {size / 1000:.1f} KB" for size, kind, step in largest))
        mean = {k: (sum(t for t, _ in v) / len(v), sum(e for _, e in v) / len(v)) for k, v in measured.items()}
        print(f"\nper run, mean: micro-batch {mean[True][0] / 1000:.1f} KB (enriched/cases {mean[True][1] / 1000:.1f} KB); "
              f"before {mean[False][0] / 1000:.1f} KB (enriched/cases {mean[False][1] / 1000:.1f} KB); "
              f"ratio {mean[True][0] / mean[False][0]:.2f}")
        print(f"goal (<= {GOAL_BYTES / 1000:.0f} KB per micro-batch run): "
              + ("met" if mean[True][0] <= GOAL_BYTES else f"NOT met ({mean[True][0] / 1000:.1f} KB)"))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
