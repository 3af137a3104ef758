"""The dbt models as assets: one `dbt build` (models, then their tests as asset checks)."""

import json
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource, dbt_assets

from llm_assets import settings
from llm_assets.analytics.project import analytics_project, dbt_executable, ensure_manifest
from llm_assets.analytics.translator import AnalyticsTranslator
from llm_assets.domain import current_pack
from llm_assets.resources.delta import DeltaLakeStorage

DBT_POOL = "duckdb"  # one dbt build at a time: DuckDB admits one writing process per file


def analytics_duckdb_path() -> Path:
    """The DuckDB file the models are written to: derived data, kept with the local state."""
    return settings.llm_assets_home() / "analytics.duckdb"


def dbt_build_args(delta_root: str, duckdb_path: Path) -> list[str]:
    """`dbt build` reading the lake at `delta_root` (the `delta` resource's root, so dbt reads
    what the assets wrote) and writing to `duckdb_path` (absolute: dbt runs in dbt_project/), with
    the domain pack's labels and action verbs (the models' accepted values and label columns)."""
    pack = current_pack()
    return ["build", "--vars", json.dumps({"delta_root": delta_root, "duckdb_path": str(duckdb_path),
                                           "labels": list(pack.labels), "action_verbs": list(pack.action_verbs)})]


def table_row_counts(duckdb_path: Path, tables: list[str]) -> dict[str, int]:
    """Rows of each table the build wrote (read after dbt released the file)."""
    if not tables:
        return {}
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        return {t: con.execute(f'select count(*) from main."{t}"').fetchone()[0] for t in tables}


def _with_row_counts(events: list, tables: Mapping[str, str], counts: Mapping[str, int]) -> Iterator:
    """The events, each model's output with the rows of its table (`tables`: output name -> table)."""
    for event in events:
        table = tables.get(event.output_name) if isinstance(event, dg.Output) else None
        if table in counts:
            event = event.with_metadata({**event.metadata, "dagster/row_count": counts[table]})
        yield event


@dbt_assets(
    manifest=ensure_manifest(analytics_project, dbt_executable()),
    project=analytics_project,
    dagster_dbt_translator=AnalyticsTranslator(),
    name="analytics_dbt_models",
    pool=DBT_POOL,
)
def analytics_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, delta: DeltaLakeStorage):
    """Daily label counts, route/fallback/cache rates, action counts, model-version comparison,
    pipeline coverage and the weekly report, built in DuckDB from the Delta tables.

    The dbt tests of the selected models run in the same build and report as asset checks;
    a failed test skips the models downstream of it (dbt's own order).
    """
    duckdb_path = analytics_duckdb_path()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    events, failure = [], None
    # Artifacts of one build in a throwaway folder: dagster-dbt would leave one per run in target/.
    with tempfile.TemporaryDirectory(prefix="dbt-build-") as target:
        invocation = dbt.cli(dbt_build_args(delta.root, duckdb_path), context=context, target_path=Path(target))
        try:
            for event in invocation.stream():  # appended one by one: kept when the stream raises at its end
                events.append(event)
        except Exception as exc:  # a failed model or test: report what was built and checked, then fail
            failure = exc
    # Events are held until dbt exits: its process keeps DuckDB's write lock while it runs.
    # Each model's table is named after it (the last part of its key).
    tables = {e.output_name: context.asset_key_for_output(e.output_name).path[-1]
              for e in events if isinstance(e, dg.Output)}
    yield from _with_row_counts(events, tables, table_row_counts(duckdb_path, list(tables.values())))
    if failure is not None:
        raise failure
