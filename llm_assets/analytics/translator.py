"""How the dbt project appears in the asset graph: keys, group, automation.

- dbt sources are the Delta tables of the lake: each maps to its asset key from
  `llm_assets/asset_keys.py`, so the models sit downstream of `raw/events`, `curated/cases`
  and `enriched/cases` in the lineage. A source without a mapping fails the load (it would
  otherwise become a dangling key nobody materializes).
- models are `analytics/<model>` in group `analytics`; kinds `dbt` and `duckdb` come from the
  manifest's adapter.
- automation: the daily models follow their upstream, at most once per refresh period; the
  weekly report is rebuilt once a week.
"""

from typing import Any, Mapping

import dagster as dg
from dagster_dbt import DagsterDbtTranslator

from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS

GROUP = "analytics"
KEY_PREFIX = "analytics"
SOURCE_ASSET_KEYS: Mapping[tuple[str, str], dg.AssetKey] = {
    ("lake", "raw_events"): RAW_EVENTS,
    ("lake", "curated_cases"): CURATED_CASES,
    ("lake", "enriched_cases"): ENRICHED_CASES,
}
WEEKLY_MODELS = frozenset({"weekly_report"})
# The daily models are rebuilt from whole tables: the ingest sensor lands data every few
# seconds, so they follow it at most every quarter of an hour, not on every micro-batch.
REFRESH_CRON = "*/15 * * * *"
WEEKLY_CRON = "0 6 * * 1"  # Monday 06:00 UTC: last week is complete


def build_follow_upstream(refresh_cron: str = REFRESH_CRON) -> dg.AutomationCondition:
    """Unpartitioned models over daily tables: build when missing, then after an upstream update.

    `eager()` never fires here: its `~any_deps_missing()` maps every daily partition of the
    upstream tables onto the model, and most past days are missing. What holds the model back
    instead is an upstream table with no data at all (nothing to read yet). Upstream runs in
    progress do not (the ingest sensor is always running one); a failed build is not retried
    until something changes upstream.
    """
    deps_have_data = dg.AutomationCondition.all_deps_match(
        ~dg.AutomationCondition.missing() | dg.AutomationCondition.will_be_requested()
    ).with_label("every_dep_has_data")
    missing_not_failed = (
        dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()
    ).with_label("missing_and_not_failed")
    refresh_due = (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & dg.AutomationCondition.cron_tick_passed(refresh_cron).since_last_handled()
    ).with_label(f"upstream_updated_and_refresh_due({refresh_cron})")
    return (
        (missing_not_failed | refresh_due)
        & deps_have_data
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follow_upstream")


def build_weekly(cron: str = WEEKLY_CRON) -> dg.AutomationCondition:
    """The weekly report: once after each cron tick (when its inputs moved since), or when missing."""
    missing_with_data = (
        dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()
        & dg.AutomationCondition.all_deps_match(
            ~dg.AutomationCondition.missing() | dg.AutomationCondition.will_be_requested())
        & ~dg.AutomationCondition.in_progress()
    ).with_label("missing_with_data")
    return (dg.AutomationCondition.on_cron(cron) | missing_with_data).with_label(f"weekly({cron})")


class AnalyticsTranslator(DagsterDbtTranslator):
    """Lake sources to their Delta asset keys; models to `analytics/<model>` with automation."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            source = (dbt_resource_props["source_name"], dbt_resource_props["name"])
            if source not in SOURCE_ASSET_KEYS:
                raise ValueError(f"dbt source {'.'.join(source)} has no asset key: add it to SOURCE_ASSET_KEYS")
            return SOURCE_ASSET_KEYS[source]
        return dg.AssetKey([KEY_PREFIX, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GROUP

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        if dbt_resource_props["resource_type"] == "source":
            return None
        if dbt_resource_props["name"] in WEEKLY_MODELS:
            return build_weekly()
        return build_follow_upstream()
