"""A small lake of real Delta tables shaped like the assets' (`raw/events`, `curated/cases`,
`enriched/cases`, partitioned by `event_date`, written with polars), and the dbt assets run on
it inside Dagster."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

import dagster as dg
import duckdb
import polars as pl

from llm_assets.analytics import definitions as analytics
from llm_assets.analytics.assets import analytics_dbt_models
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS
from llm_assets.curated.joining import ENTITY_SIGNALS_SCHEMA, EXCEPTIONS_SCHEMA, curate_cases
from llm_assets.llm.pipeline import ENRICHED_SCHEMA
from llm_assets.ingest.contract import RAW_EVENTS_SCHEMA
from llm_assets.resources.delta import DeltaLakeStorage


@dataclass(frozen=True)
class Case:
    """One event through the layers; `enriched=False` stops it at curated/cases."""

    event_id: str
    day: str
    label: str = "data_quality"
    route: str = "llm"
    actions: Sequence[tuple[str, str]] = ()  # (verb, approval_level)
    confidence: float = 0.8
    model_version: str = "model-a"
    prompt_version: str = "prompt-1"
    served_from_cache: bool = False
    enriched: bool = True
    curated: bool = True


def _raw_row(case: Case, offset: int) -> dict:
    ts = datetime.fromisoformat(f"{case.day}T09:00:00+00:00") + timedelta(minutes=offset)
    return {"event_id": case.event_id, "source_system": "ledger", "event_ts": ts, "event_date": case.day,
            "partner_id": "partner-1", "entity_id": f"entity-{offset % 3}", "payload_raw": '{"amount": 10}',
            "extra": None, "kafka_topic": "events.raw", "kafka_partition": 0, "kafka_offset": offset,
            "ingested_at": ts + timedelta(seconds=5)}


def _enriched_row(case: Case) -> dict:
    fallback = case.route == "fallback"
    return {"event_id": case.event_id, "event_date": case.day, "summary": f"summary of {case.event_id}",
            "label": case.label, "confidence": case.confidence,
            "actions": json.dumps([{"action": verb, "reason": "because", "approval_level": level}
                                   for verb, level in case.actions]),
            "severity": 3, "route": case.route, "fallback_reason": "llm_timeout" if fallback else None,
            "model_version": case.model_version, "prompt_version": case.prompt_version,
            "kb_index_version": "kb-1", "gate_version": "gate-1",
            "gate_confidence": 0.95 if case.route == "gate" else 0.4, "retrieved_doc_ids": ["doc-1"],
            "redacted_prompt_sha256": "0" * 64, "input_sha256": "1" * 64,
            "llm_calls": 1 if case.route in ("llm", "fallback") and not case.served_from_cache else 0,
            "served_from_cache": case.served_from_cache,
            "enriched_at": datetime(2026, 3, 10, tzinfo=timezone.utc)}


def _write(df: pl.DataFrame, uri: str) -> None:
    df.write_delta(uri, mode="overwrite", delta_write_options={"partition_by": ["event_date"]})


def write_lake(delta: DeltaLakeStorage, cases: Sequence[Case]) -> None:
    """The three tables of `cases` (curated through the real join, enriched in its real schema)."""
    raw = pl.DataFrame([_raw_row(c, i) for i, c in enumerate(cases)], schema=RAW_EVENTS_SCHEMA)
    curated = curate_cases(raw, pl.DataFrame(schema=ENTITY_SIGNALS_SCHEMA), pl.DataFrame(schema=EXCEPTIONS_SCHEMA))
    curated = curated.filter(pl.col("event_id").is_in([c.event_id for c in cases if c.curated]))
    enriched = pl.DataFrame([_enriched_row(c) for c in cases if c.enriched], schema=ENRICHED_SCHEMA)
    _write(raw, delta.uri(RAW_EVENTS))
    _write(curated, delta.uri(CURATED_CASES))
    _write(enriched, delta.uri(ENRICHED_CASES))


def build_models(delta: DeltaLakeStorage) -> dg.ExecuteInProcessResult:
    """`dbt build` of every model through dagster-dbt, as a run of the analytics assets."""
    return dg.materialize([analytics_dbt_models], resources={**analytics.defs.resources, "delta": delta},
                          raise_on_error=False)


def query(home: Path, sql: str) -> list[tuple]:
    """Rows of a query on the analytics DuckDB file a build wrote under `home` (LLM_ASSETS_HOME)."""
    with duckdb.connect(str(home / "analytics.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()
