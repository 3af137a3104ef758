"""Automation conditions shared by the domains."""

import dagster as dg


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
