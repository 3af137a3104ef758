"""Markdown tables for materialization metadata (rendered as tables in the Dagster UI)."""

from typing import Iterable, Sequence

import dagster as dg
import polars as pl

MAX_CELL_CHARS = 80


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")[:MAX_CELL_CHARS]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> dg.MetadataValue:
    """A markdown table; `_none_` when there are no rows."""
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    if not body:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *body]))


def frame_table(df: pl.DataFrame, limit: int = 5) -> dg.MetadataValue:
    """The first `limit` rows of a frame as a markdown table."""
    return markdown_table(df.columns, df.head(limit).iter_rows())
