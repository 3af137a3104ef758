"""The golden labelled cases a model version is evaluated on, shaped like `curated/cases` rows
(so they go through the same enrichment path as production) plus `expected_label`.

They are the `evaluation` split of `evaluation/golden_cases` (the domain pack's seed file and a
share of analysts' ratings). Pure module: no Dagster import.
"""

import hashlib

import polars as pl

GOLDEN_DAY = "golden"  # the `event_date` the pipeline gives golden rows (they belong to no day)
DEFAULT_GOLDEN_CASES = 0  # 0: every case of the split


def golden_frame(golden: pl.DataFrame | None = None, n: int = DEFAULT_GOLDEN_CASES) -> pl.DataFrame:
    """Golden cases (`evaluation/golden_cases` rows; None: the `evaluation` split of the domain pack's
    seed file) as curated-like rows with their `expected_label`, ordered by `event_id`; the first `n`
    when `n` > 0."""
    if golden is None:
        from llm_assets.evaluation.golden_cases import seed_golden
        golden = seed_golden().filter(pl.col("split") == "evaluation")
    rows = golden.sort("event_id")
    if n > 0:
        rows = rows.head(n)
    return rows.select(
        "event_id", pl.lit(GOLDEN_DAY).alias("event_date"), "payload_raw", "source_system", "partner_id",
        pl.lit("unknown").alias("partner_risk_tier"), pl.lit(False).alias("is_exception"),
        pl.lit("none").alias("exception_type"), pl.col("label").alias("expected_label"),
    )


def golden_fingerprint(frame: pl.DataFrame) -> str:
    """sha256 of the cases and their labels: two evaluations are comparable when it matches."""
    digest = hashlib.sha256()
    for event_id, text, label in frame.select("event_id", "payload_raw", "expected_label").iter_rows():
        digest.update(f"{event_id}\x1f{text}\x1f{label}\x1e".encode())
    return digest.hexdigest()
