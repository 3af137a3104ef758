"""Cost of a single-run backfill of `curated/cases` + `enriched/cases` over many days.

D days of N cases (default 30 x 50) are enriched three ways, in-process on an ephemeral
instance with real Delta, Milvus Lite, tansu and the packaged embedding model, on the local
LLM backend (no LLM server), with `full_refresh` and the result cache off so every run
really enriches every case:
  1. single run: one run over the partition key range (what `BackfillPolicy.single_run()` gives);
  2. one partition: the same cases in a single day (the floor: the work without partitions);
  3. multi run: one run per day (what a backfill without the policy would launch).
Prints the seconds of each and the ratios. Goal: single run <= 1.5 x one partition.

Run: `.venv/bin/python -W ignore benchmarks/backfill.py [--days 30 --per-day 50]`.
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import polars as pl  # noqa: E402

ONE_DAY = "2026-01-01"  # the single partition holding every case in mode 2
FULL_REFRESH = {"curated__cases": {"config": {"full_refresh": True}},
                "enriched__cases": {"config": {"full_refresh": True, "use_cache": False}}}


def _raw_frame(sample_dir: Path) -> pl.DataFrame:
    from llm_assets.ingest import contract
    from llm_assets.domain.packs.payments_ops.sample_data.generator import load_messages

    values = [m.value for m in load_messages(sample_dir)]
    frame = contract.valid_events_frame(contract.validate_values(values), topic="events.raw",
                                        partitions=[0] * len(values), offsets=list(range(len(values))),
                                        ingested_at=datetime.now(timezone.utc))
    return frame.unique("event_id", keep="last").sort("event_id")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=50)
    args = parser.parse_args()

    import dagster as dg

    from llm_assets import settings
    from llm_assets.asset_keys import RAW_EVENTS
    from llm_assets.dev.broker import create_topics, start_broker
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.resources.embedder import EmbedderResource
    from llm_assets.resources.kafka import KafkaResource
    from llm_assets.resources.llm import LLMResource
    from llm_assets.resources.milvus import MilvusResource
    from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
    from tests.support.pipeline import artifact_resources, materialize_keys

    home = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    os.environ.update(LLM_ASSETS_HOME=str(home), SAMPLE_DATA_DIR=str(home / "sample_data"))
    os.environ.pop("LLM_BASE_URL", None)
    # Generous: about 5% of the sample events are invalid on purpose, and days are uneven.
    generate_sample_data(home / "sample_data", n_events=int(args.days * args.per_day * 1.4) + 50,
                         start_date=date(2026, 10, 1), days=args.days)
    raw = _raw_frame(home / "sample_data")
    raw = raw.sort("event_id").group_by("event_date", maintain_order=True).head(args.per_day)
    days = sorted(d for d, n in raw.group_by("event_date").len().iter_rows() if n == args.per_day)
    raw = raw.filter(pl.col("event_date").is_in(days))
    print(f"{len(days)} days x {args.per_day} cases = {raw.height} cases; local backend, full_refresh, no cache")

    broker = start_broker()
    try:
        create_topics(broker.bootstrap, {settings.ENRICHED_TOPIC: 3})
        resources = {"delta": DeltaLakeStorage(root=str(home / "delta")),
                     "milvus": MilvusResource(uri=str(home / "milvus" / "kb.db")), "embedder": EmbedderResource(),
                     "kafka": KafkaResource(bootstrap_servers=broker.bootstrap), "llm": LLMResource(),
                     **artifact_resources(home)}
        delta = resources["delta"]
        for (day,), part in raw.group_by("event_date"):
            delta.merge(RAW_EVENTS, part, ["event_id"], partition_column="event_date", partition_value=day)
        one_day = raw.with_columns(pl.lit(ONE_DAY).cast(raw.schema["event_date"]).alias("event_date"),
                                   ("one-" + pl.col("event_id")).alias("event_id"))
        delta.merge(RAW_EVENTS, one_day, ["event_id"], partition_column="event_date", partition_value=ONE_DAY)

        instance = dg.DagsterInstance.ephemeral()
        quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        seed = materialize_keys(resources, ["features/entity_signals", "signals/exceptions", "kb/documents",
                                            "kb/index", "models/embedding_gate"], run_config=quiet, instance=instance)
        assert seed.success
        resources["embedder"].encode(["warm-up"])  # the model loads once, outside the timings

        def backfill(first: str, last: str) -> float:
            # A partition key range in one run: the tags a single-run backfill sets.
            from llm_assets.partitions import daily_partitions
            from tests.support.pipeline import graph_definitions

            assets, checks = graph_definitions()
            assets = [a for a in assets if a.partitions_def == daily_partitions]
            assets.append(dg.AssetSpec(["raw", "events"], partitions_def=daily_partitions))
            checks = [c for c in checks if c.partitions_def == daily_partitions]
            started = time.perf_counter()
            result = dg.materialize(
                [*assets, *checks], selection=dg.AssetSelection.assets(["curated", "cases"], ["enriched", "cases"]),
                resources=resources, run_config={**quiet, "ops": FULL_REFRESH}, instance=instance,
                tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
                raise_on_error=False)
            assert result.success
            return time.perf_counter() - started

        single = backfill(days[0], days[-1])
        print(f"1. single run over {len(days)} days: {single:7.1f} s")
        one = backfill(ONE_DAY, ONE_DAY)
        print(f"2. same cases in one partition:   {one:7.1f} s")
        started = time.perf_counter()
        for day in days:
            assert materialize_keys(resources, ["curated/cases", "enriched/cases"], partition_key=day,
                                    run_config={**quiet, "ops": FULL_REFRESH}, instance=instance).success
        multi = time.perf_counter() - started
        print(f"3. one run per day ({len(days)} runs): {multi:7.1f} s")
        enriched = delta.read(dg.AssetKey(["enriched", "cases"]))
        assert enriched.height == 2 * raw.height, enriched.height
        print(f"single run / one partition: {single / one:.2f} (goal <= 1.5); "
              f"multi run / single run: {multi / single:.2f}")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
