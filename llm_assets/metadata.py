"""Markdown tables for materialization metadata (rendered as tables in the Dagster UI)."""

import re
from typing import Iterable, Sequence

import dagster as dg
import polars as pl

MAX_CELL_CHARS = 80
# The tag `kafka_events_sensor` puts on each micro-batch run (its batch id). Up to 8,640 such runs a day:
# their materializations carry numbers Dagster plots, never pictures (a PNG per run would be most of what
# the instance's event log stores); daily runs, backfills and evaluations keep their pictures.
MICRO_BATCH_TAG = "llm_assets/kafka_batch"


def is_micro_batch(run_tags: dict[str, str]) -> bool:
    return MICRO_BATCH_TAG in run_tags

# Characters that make markup in a (GFM) table cell: HTML tags and entities (`<EMAIL>` would
# be swallowed as a tag), emphasis, links and images, strikethrough, the cell separator and
# the backslash itself; a backslash before ASCII punctuation is always a literal in CommonMark.
# An underscore inside a word (snake_case) never emphasizes, so it stays readable.
_MARKDOWN_SIGNIFICANT = re.compile(r"([\\*\[\]<>|~&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")
# A code span already shows its text literally (escapes included, so none go inside); only a
# pipe needs its backslash there, or it would end the table cell.
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def escape_markdown(text: str) -> str:
    """`text` as literal characters in a markdown table cell (one line)."""
    text = " ".join(text.splitlines())
    parts, start = [], 0
    for span in _CODE_SPAN.finditer(text):
        parts += [_MARKDOWN_SIGNIFICANT.sub(r"\\\1", text[start:span.start()]), span.group(0).replace("|", "\\|")]
        start = span.end()
    parts.append(_MARKDOWN_SIGNIFICANT.sub(r"\\\1", text[start:]))
    return "".join(parts)


def _float_text(value: float) -> str:
    """Floats for people: three places after the point (a confidence of 0.506, not 0.5061228275299072),
    three significant digits below 0.001 (a p-value of 2.3e-05 stays readable)."""
    if value != value or abs(value) == float("inf"):
        return str(value)
    if value == 0 or abs(value) >= 0.001:
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = _float_text(value) if isinstance(value, float) else str(value)
    if len(text) > MAX_CELL_CHARS:  # cut before escaping, so no escape is cut in half
        text = text[:MAX_CELL_CHARS - 1] + "…"
    return escape_markdown(text)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> dg.MetadataValue:
    """A markdown table whose cells show their text as it is; `_none_` when there are no rows."""
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    if not body:
        return dg.MetadataValue.md("_none_")
    head = "| " + " | ".join(_cell(h) for h in header) + " |"
    return dg.MetadataValue.md("\n".join([head, "|" + "---|" * len(header), *body]))


def frame_table(df: pl.DataFrame, limit: int = 5) -> dg.MetadataValue:
    """The first `limit` rows of a frame as a markdown table."""
    return markdown_table(df.columns, df.head(limit).iter_rows())
