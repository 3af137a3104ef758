"""Automation conditions shared by the domains."""

from datetime import timedelta
from typing import Sequence

import dagster as dg

# Days of daily partitions the automation keeps up to date (late data, older sample days).
DEFAULT_LOOKBACK_DAYS = 7


def build_when_missing() -> dg.AutomationCondition:
    """Unpartitioned seed tables (signals, the KB): build once when missing, then on request.

    `AutomationCondition.on_missing()` only fires for targets added after it was applied, so a
    fresh deployment would never build them; this fires while missing, unless a run is in
    progress or the last one failed (no retry loop on a broken source).
    """
    return (
        dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.execution_failed()
        & ~dg.AutomationCondition.any_deps_missing()
    ).with_label("build_when_missing")


def build_daily_derived(lookback_days: int = DEFAULT_LOOKBACK_DAYS,
                        ignore_updates_of: Sequence[dg.AssetKey] = (),
                        may_be_missing: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    """Daily assets derived from other tables (`curated/cases`, `enriched/cases`).

    Requests every partition of the last `lookback_days` days (not only the latest one, as
    `eager()` does) that is

    - missing, unless its last run failed (no retry loop: a failed partition waits for new
      upstream data or a person), or
    - behind an upstream partition updated since it was last requested or materialized
      (updates of `ignore_updates_of` do not count: e.g. a changed signal table or KB
      version is taken in by a backfill, not by re-running a week of partitions);

    and only when no upstream partition is missing (but `may_be_missing`: an upstream that is read
    when present, e.g. `models/production` before the first promotion), every blocking check of the upstream
    partitions passed (a failed check stops it across runs, not only inside one; a day whose
    upstream run is in flight waits for that run's checks), and the partition itself is not
    already in a run. Upstream runs in progress do not hold the other days back: the Kafka
    sensor launches an ingest run every few seconds, and `eager()`'s `~any_deps_in_progress()`
    (on the latest day only) starved the curated layer for minutes.
    """
    deps_updated = dg.AutomationCondition.any_deps_updated()
    if ignore_updates_of:
        deps_updated = deps_updated.ignore(dg.AssetSelection.assets(*ignore_updates_of))
    missing_not_failed = (
        dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()
    ).with_label("missing_and_not_failed")
    return (
        dg.AutomationCondition.in_latest_time_window(timedelta(days=lookback_days))
        & (missing_not_failed | deps_updated.since_last_handled())
        & ~_deps_missing(may_be_missing)
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"daily_derived(lookback={lookback_days}d)")


def build_refresh_after_update_of(keys: Sequence[dg.AssetKey], lookback_days: int = DEFAULT_LOOKBACK_DAYS,
                                  may_be_missing: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    """Daily partitions of the last `lookback_days` days, once after each update of one of `keys`
    (e.g. a promotion in `models/production`: the days it left behind are enriched again; older
    days only by a backfill), under the same guards as `build_daily_derived`: no upstream
    partition missing (but `may_be_missing`), upstream blocking checks passed, not already in a run.
    """
    updated = dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets(*keys))
    names = ",".join(k.to_user_string() for k in keys)
    return (
        dg.AutomationCondition.in_latest_time_window(timedelta(days=lookback_days))
        & updated.since_last_handled()
        & ~_deps_missing(may_be_missing)
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"refresh_after_update_of({names}, lookback={lookback_days}d)")


def _deps_missing(may_be_missing: Sequence[dg.AssetKey]) -> dg.AutomationCondition:
    missing = dg.AutomationCondition.any_deps_missing()
    return missing.ignore(dg.AssetSelection.assets(*may_be_missing)) if may_be_missing else missing
