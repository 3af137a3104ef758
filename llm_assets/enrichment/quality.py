"""Quality rules over `enriched/cases` rows, as pure functions returning (passed, details).

The asset evaluates them per date on the `enriched/cases` version it wrote: the content rules
on the rows that run wrote (earlier rows were judged by the runs that wrote them), the
partition rules (`one_row_per_case`, `fallback_rate`) on the whole date against the
`curated/cases` version it read. Tests call them on planted bad rows.
"""

import json

import polars as pl

from llm_assets.domain import current_pack
from llm_assets.llm.pipeline import ROUTES
from llm_assets.lib.redaction import find_pii

VERSION_COLUMNS = ("model_version", "prompt_version", "kb_index_version")


def label_and_confidence_valid(rows: pl.DataFrame) -> tuple[bool, dict]:
    bad_label = rows.filter(~pl.col("label").is_in(current_pack().labels) | pl.col("label").is_null()).height
    bad_conf = rows.filter(pl.col("confidence").is_null() | (pl.col("confidence") < 0) | (pl.col("confidence") > 1)).height
    return bad_label == 0 and bad_conf == 0, {"invalid_labels": bad_label, "invalid_confidences": bad_conf}


def actions_allowed(rows: pl.DataFrame) -> tuple[bool, dict]:
    pack = current_pack()
    bad, too_many = 0, 0
    for raw in rows["actions"].to_list():
        actions = json.loads(raw or "[]")
        too_many += len(actions) > pack.max_actions
        bad += sum(a.get("action") not in pack.action_verbs or a.get("approval_level") not in pack.approval_levels
                   for a in actions)
    return bad == 0 and too_many == 0, {"actions_outside_allow_list": bad, "rows_with_too_many_actions": too_many}


def versions_present(rows: pl.DataFrame) -> tuple[bool, dict]:
    missing = {c: rows.filter(pl.col(c).is_null() | (pl.col(c) == "")).height for c in VERSION_COLUMNS}
    return not any(missing.values()), {f"missing_{c}": n for c, n in missing.items()}


def no_pii_in_outputs(rows: pl.DataFrame) -> tuple[bool, dict]:
    offenders = []
    for event_id, summary, actions in rows.select("event_id", "summary", "actions").iter_rows():
        kinds = find_pii(summary or "") + find_pii(actions or "")
        if kinds:
            offenders.append({"event_id": event_id, "kinds": sorted(set(kinds))})
    return not offenders, {"rows_with_pii": len(offenders), "examples": offenders[:5]}


def one_row_per_case(rows: pl.DataFrame, curated_event_ids: pl.Series) -> tuple[bool, dict]:
    enriched = set(rows["event_id"].to_list())
    curated = set(curated_event_ids.to_list())
    duplicates = rows.height - len(enriched)
    missing, extra = len(curated - enriched), len(enriched - curated)
    return duplicates == 0 and missing == 0 and extra == 0, {
        "enriched_rows": rows.height, "curated_rows": len(curated), "duplicates": duplicates,
        "missing_cases": missing, "unexpected_cases": extra}


def fallback_rate(rows: pl.DataFrame, max_rate: float) -> tuple[bool, dict]:
    """Share of rows the rules decided because the LLM failed (cached rows are never fallbacks)."""
    fallbacks = rows.filter(pl.col("route") == "fallback").height
    rate = fallbacks / rows.height if rows.height else 0.0
    return rate <= max_rate, {"fallback_rate": round(rate, 4), "max_fallback_rate": max_rate,
                              "fallback_rows": fallbacks}


def routes_say_what_decided(rows: pl.DataFrame) -> tuple[bool, dict]:
    """Every route is one of `ROUTES`; `fallback_reason` is set exactly on fallback rows; gate and
    local rows made no LLM call (but a gated row's shadow audit); a cached row is never a fallback; `served_from_cache` is set."""
    route = pl.col("route")
    audited = ((route == "gate") & pl.col("audit_source").is_not_null()) if "audit_source" in rows.columns \
        else pl.lit(False)
    problems = {
        "unknown_routes": rows.filter(route.is_null() | ~route.is_in(ROUTES)).height,
        "fallbacks_without_reason": rows.filter((route == "fallback") & pl.col("fallback_reason").is_null()).height,
        "reasons_outside_fallback": rows.filter((route != "fallback") & pl.col("fallback_reason").is_not_null()).height,
        # a gated row's calls are its shadow audit's, and it says so (audit_source)
        "llm_calls_on_gate_or_local": rows.filter(route.is_in(["gate", "local"]) & (pl.col("llm_calls") > 0)
                                                  & ~audited).height,
        "cached_fallbacks": rows.filter((route == "fallback") & pl.col("served_from_cache")).height,
        "missing_served_from_cache": rows.filter(pl.col("served_from_cache").is_null()).height,
    }
    counts = rows.group_by("route").len().sort("route").rows() if rows.height else []
    return not any(problems.values()), {**problems, "routes": {str(r): n for r, n in counts}}
