"""The golden labelled cases every model version is evaluated on: the one place that knows where
they come from (the seeded sample generator), so a change of source touches only this module.

The cases look like `curated/cases` rows (so they go through the same enrichment path as
production) plus `expected_label`. Pure module: no Dagster import.
"""

import hashlib

import polars as pl

from llm_assets.sample_data.generator import golden_cases

GOLDEN_DAY = "golden"  # the `event_date` the pipeline gives golden rows (they belong to no day)
DEFAULT_GOLDEN_CASES = 200


def golden_frame(n: int = DEFAULT_GOLDEN_CASES) -> pl.DataFrame:
    """The golden cases as curated-like rows with their `expected_label`, ordered by `event_id`."""
    rows = golden_cases(n)
    return pl.DataFrame({
        "event_id": [r["event_id"] for r in rows],
        "event_date": [GOLDEN_DAY] * len(rows),
        "payload_raw": [r["payload_raw"] for r in rows],
        "source_system": [r["source_system"] for r in rows],
        "partner_id": [r["partner_id"] for r in rows],
        "partner_risk_tier": ["unknown"] * len(rows),
        "is_exception": [False] * len(rows),
        "exception_type": ["none"] * len(rows),
        "expected_label": [r["label"] for r in rows],
    }).sort("event_id")


def golden_fingerprint(frame: pl.DataFrame) -> str:
    """sha256 of the cases and their labels: two evaluations are comparable when it matches."""
    digest = hashlib.sha256()
    for event_id, text, label in frame.select("event_id", "payload_raw", "expected_label").iter_rows():
        digest.update(f"{event_id}\x1f{text}\x1f{label}\x1e".encode())
    return digest.hexdigest()
