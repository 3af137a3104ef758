"""Markdown previews in materialization metadata show their text as it is.

The UI swallowed `<EMAIL>` / `<PHONE>` placeholders as HTML tags. The cells are rendered here
with a CommonMark renderer with GFM tables and raw HTML on, like the UI's markdown.
"""

import html
import re

import polars as pl
import pytest
from markdown_it import MarkdownIt

from llm_assets.metadata import MAX_CELL_CHARS, escape_markdown, frame_table, markdown_table

pytestmark = pytest.mark.unit

RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _cells(markdown: str) -> list[str]:
    """The text of every body cell, as a browser would show it (tags and entities resolved)."""
    rendered = RENDERER.render(markdown)
    assert "<td>" in rendered, rendered  # still a table
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td>(.*?)</td>", rendered, re.S)]


def test_redaction_placeholders_show_as_text():
    table = markdown_table(["summary"], [["Customer <EMAIL> called from <PHONE> about <CARD>"]]).value

    assert _cells(table) == ["Customer <EMAIL> called from <PHONE> about <CARD>"]
    assert "<email>" not in RENDERER.render(table).lower()  # no tag reaches the page


def test_markdown_significant_characters_show_as_text():
    text = "*bold* _em_ [link](x) ![i](y) ~~gone~~ a|b &amp; back\\slash 2 < 3 snake_case"

    (cell,) = _cells(markdown_table(["text"], [[text]]).value)

    assert cell == text
    assert escape_markdown("snake_case") == "snake_case"  # identifiers stay readable in the raw text


def test_code_spans_show_their_text_literally():
    (cell,) = _cells(markdown_table(["reason"], [["missing `<EMAIL> a|b` and a lone ` tick"]]).value)

    assert cell == "missing <EMAIL> a|b and a lone ` tick"


def test_cells_are_one_line_and_cut_before_escaping():
    long = "<EMAIL> " * 40

    one_line, cut = _cells(markdown_table(["text"], [["line one\nline two"], [long]]).value)

    assert one_line == "line one line two"
    assert len(cut) == MAX_CELL_CHARS and cut.endswith("…") and cut.startswith("<EMAIL> <EMAIL>")


def test_frame_table_escapes_values_and_keeps_empty_cells():
    df = pl.DataFrame({"event_id": ["e1", "e2"], "payload": ["<IBAN> | x", None]})

    assert _cells(frame_table(df).value) == ["e1", "<IBAN> | x", "e2", ""]
    assert markdown_table(["a"], []).value == "_none_"
