"""The end-to-end demo: sample events through Kafka and the whole asset graph.

Runs on the Dagster instance in `$DAGSTER_HOME`, so every run, check and metadata plot
the demo produced is there to browse afterwards in `make dev`.
"""

import time
from pathlib import Path

import dagster as dg
import polars as pl

from llm_assets import settings


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str], partition_key: str | None = None):
    result = dg.materialize(
        assets=[*defs.assets, *(defs.asset_checks or [])],
        selection=dg.AssetSelection.keys(*[dg.AssetKey.from_user_string(k) for k in keys]),
        partition_key=partition_key,
        resources=defs.resources,
        instance=instance,
        raise_on_error=True,
    )
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    for evaluation in failed:
        print(f"  check {evaluation.asset_check_key.to_user_string()} FAILED ({evaluation.severity.value})")
    return result


def run_demo(sample_dir: Path) -> int:
    from llm_assets.definitions import defs
    from llm_assets.ingest.local_runner import drain_topic, produce_sample_messages
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.sample_data.generator import load_messages

    started = time.perf_counter()
    instance = dg.DagsterInstance.get()
    messages = load_messages(sample_dir)
    produce_sample_messages(settings.kafka_bootstrap_servers(), settings.EVENTS_TOPIC, messages)
    print(f"produced {len(messages)} messages to {settings.EVENTS_TOPIC}")

    print("1/4 ingest: kafka_events_sensor ticks -> raw/events, raw/rejected_events")
    ingest = drain_topic(instance, defs.resources)
    print(f"  {ingest}")

    print("2/4 signals and knowledge base: entity signals, exceptions, kb/documents, kb/index, embedding gate")
    _materialize(defs, instance, ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index",
                                  "models/embedding_gate"])

    delta: DeltaLakeStorage = defs.resources["delta"]
    days = sorted(delta.read("raw/events").get_column("event_date").unique().to_list())
    print(f"3/4 curated/cases and enriched/cases for {len(days)} days: {', '.join(days)}")
    for day in days:
        _materialize(defs, instance, ["curated/cases", "enriched/cases"], partition_key=day)

    print("4/4 summary")
    _print_summary(delta, days)
    print(f"done in {time.perf_counter() - started:.0f} s; browse it with `make dev` (http://127.0.0.1:3000)")
    return 0


def _print_summary(delta, days: list[str]) -> None:
    raw = delta.read("raw/events")
    rejected = delta.read("raw/rejected_events")
    curated = delta.read("curated/cases")
    enriched = delta.read("enriched/cases")
    print(f"  {'table':<28}{'rows':>8}")
    for name, df in [("raw/events", raw), ("raw/rejected_events", rejected),
                     ("features/entity_signals", delta.read("features/entity_signals")),
                     ("signals/exceptions", delta.read("signals/exceptions")),
                     ("kb/documents", delta.read("kb/documents")),
                     ("curated/cases", curated), ("enriched/cases", enriched)]:
        print(f"  {name:<28}{df.height:>8}")
    if rejected.height:
        print("  rejected by reason: " + ", ".join(
            f"{r['reason']}={r['len']}" for r in rejected.with_columns(
                pl.col("error").str.split(":").list.first().alias("reason")).group_by("reason").len().sort("reason").to_dicts()))
    if enriched.height:
        print("  enriched per day and route:")
        table = enriched.group_by("event_date", "route").len().pivot(on="route", index="event_date", values="len").sort("event_date")
        print("  " + str(table.fill_null(0)).replace("\n", "\n  "))
        print("  labels: " + ", ".join(f"{r['label']}={r['len']}" for r in enriched.group_by("label").len().sort("label").to_dicts()))
        versions = enriched.select("model_version", "prompt_version", "kb_index_version").unique().to_dicts()
        print(f"  versions: {versions}")
    bundles = sorted(settings.audit_dir().rglob("*.json"))
    print(f"  audit bundles: {len(bundles)} under {settings.audit_dir()} (verify: python -m llm_assets.cli verify-audit PATH)")
