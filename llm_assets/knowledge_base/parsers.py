"""Documents teams already have (Markdown, HTML, plain text, PDF) as heading-delimited sections; no Dagster.

`parse_document(name, data)` turns one file's bytes into `Section`s: a section is the text
under one heading, `heading` its path from the top (`Runbook > Escalation`), so chunks are
cut along the document's own structure and carry where they come from.

- Markdown (`.md`, `.markdown`): `markdown-it-py` (CommonMark + tables) finds the ATX and
  setext headings `#`..`######`; text is the rendered plain text (no markup), code blocks kept.
  A leading YAML front matter block is dropped.
- HTML (`.html`, `.htm`): `beautifulsoup4` on the stdlib `html.parser`; `h1`..`h6` delimit the
  sections, `script`/`style`/`head` are skipped, block elements break lines, text before the
  first heading is headed by the `<title>` when there is one. Bytes are decoded with the
  declared charset, else UTF-8, else windows-1252.
- PDF (`.pdf`): `pypdf`, one section per page (`page 3`); a page without text (a scan) is
  skipped, a PDF without any text is an error (OCR is out of scope).
- Plain text (`.txt`): one section, no heading.

Maintained, pure-Python parsers: nothing to compile, no model to download, the same result
on a laptop and in a pod. Markdown and text must be UTF-8 (a BOM is fine); HTML follows its
declared charset. A document that cannot be used raises `ValueError` with the reason, which
the corpus loader reports beside the file name and skips.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Callable

MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
TEXT_SUFFIXES = (".txt",)
PDF_SUFFIXES = (".pdf",)
HEADING_SEPARATOR = " > "


@dataclass(frozen=True)
class Section:
    heading: str | None  # the heading path, e.g. "Runbook > Escalation"; None: before any heading / no headings
    text: str


def _clean(text: str) -> str:
    """Whitespace runs inside a line collapsed, lines stripped, blank lines dropped."""
    lines = (re.sub(r"[^\S\n]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Sections:
    """Collects text under the current heading path; `heading(level, title)` starts a new section."""

    def __init__(self, first_heading: str | None = None):
        self.sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._current = first_heading
        self._parts: list[str] = []

    def add(self, text: str) -> None:
        self._parts.append(text)

    def flush(self) -> None:
        text = _clean("".join(self._parts))
        if text:
            self.sections.append(Section(self._current, text))
        self._parts = []

    def heading(self, level: int, title: str) -> None:
        self.flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, _one_line(title)))
        self._current = HEADING_SEPARATOR.join(t for _, t in self._path if t) or None

    def done(self) -> list[Section]:
        self.flush()
        return self.sections


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM allowed); anything else is an error naming the first bad byte."""
    if b"\x00" in data:
        raise ValueError("not UTF-8 text: it holds NUL bytes (binary, or UTF-16?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


# --- Markdown ------------------------------------------------------------------------------------
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def _inline_text(token) -> str:
    parts = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content)  # the alt text
    return "".join(parts)


def parse_markdown(data: bytes) -> list[Section]:
    from markdown_it import MarkdownIt

    text = _FRONT_MATTER.sub("", decode_text(data), count=1)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    out = _Sections()
    row: list[str] | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open":
            title = _inline_text(tokens[i + 1]) if i + 1 < len(tokens) and tokens[i + 1].type == "inline" else ""
            out.heading(int(token.tag[1:]), title)
            i += 3  # heading_open, inline, heading_close
            continue
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            out.add(" | ".join(row or ()) + "\n")
            row = None
        elif token.type == "inline":
            if row is not None:
                row.append(_one_line(_inline_text(token)))
            else:
                out.add(_inline_text(token) + "\n")
        elif token.type in ("fence", "code_block"):
            out.add(token.content + "\n")
        elif token.type == "html_block":
            out.add(_html_fragment_text(token.content) + "\n")
        i += 1
    return out.done()


# --- HTML ----------------------------------------------------------------------------------------
_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_HTML_SKIPPED = {"script", "style", "head", "noscript", "template", "svg", "math", "iframe", "object"}
_HTML_BLOCKS = {
    "address", "article", "aside", "blockquote", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}
_BREAK = object()


def _soup(data: str):
    from bs4 import BeautifulSoup

    return BeautifulSoup(data, "html.parser")


def _html_walk(root, out: _Sections) -> None:
    """Depth-first, without recursion (deeply nested pages must not hit the recursion limit)."""
    from bs4 import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag

    skipped_strings = (Comment, Declaration, Doctype, ProcessingInstruction)
    stack = list(reversed(list(root.children)))
    while stack:
        node = stack.pop()
        if node is _BREAK:
            out.add("\n")
        elif isinstance(node, NavigableString):
            if not isinstance(node, skipped_strings):
                out.add(str(node))
        elif isinstance(node, Tag):
            name = (node.name or "").lower()
            if name in _HTML_SKIPPED:
                continue
            if name in _HTML_HEADINGS:
                out.heading(_HTML_HEADINGS[name], node.get_text(" ", strip=True))
                continue
            if name == "br":
                out.add("\n")
                continue
            if name in _HTML_BLOCKS:
                out.add("\n")
                stack.append(_BREAK)
            stack.extend(reversed(list(node.children)))


def _html_fragment_text(html: str) -> str:
    out = _Sections()
    _html_walk(_soup(html), out)
    return "\n".join(s.text for s in out.done())


def decode_html(data: bytes) -> str:
    """The declared charset (BOM, `<meta charset>`), else UTF-8, else windows-1252: deterministic, no
    statistical guess (which calls a short latin-1 page Urdu)."""
    from bs4 import UnicodeDammit
    from bs4.dammit import EncodingDetector

    if b"\x00" in data:
        raise ValueError("not HTML text: it holds NUL bytes (binary, or UTF-16?)")
    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    dammit = UnicodeDammit(data, known_definite_encodings=[e for e in (declared, "utf-8", "windows-1252") if e],
                           is_html=True)
    if dammit.unicode_markup is None or dammit.contains_replacement_characters:
        raise ValueError("undecodable HTML: no declared or fallback character encoding fits its bytes")
    return dammit.unicode_markup


def parse_html(data: bytes) -> list[Section]:
    soup = _soup(decode_html(data))
    title = _one_line(soup.title.get_text()) if soup.title else ""
    out = _Sections(first_heading=title or None)
    _html_walk(soup, out)
    return out.done()


# --- PDF and plain text --------------------------------------------------------------------------
def parse_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader

    # pypdf raises many kinds of errors on a damaged file; any of them skips the document.
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted and not reader.decrypt("")
    except Exception as exc:
        raise ValueError(f"cannot parse the PDF: {type(exc).__name__}: {exc}") from None
    if encrypted:
        raise ValueError("the PDF is encrypted with a password")
    sections, number = [], 0
    try:
        for number, page in enumerate(reader.pages, start=1):
            text = _clean(page.extract_text() or "")
            if text:
                sections.append(Section(f"page {number}", text))
    except Exception as exc:
        raise ValueError(f"cannot parse the PDF (page {number or 1}): {type(exc).__name__}: {exc}") from None
    if not sections:
        raise ValueError("the PDF has no extractable text (a scan? OCR is not supported)")
    return sections


def parse_text(data: bytes) -> list[Section]:
    text = _clean(decode_text(data))
    return [Section(None, text)] if text else []


PARSERS: dict[str, Callable[[bytes], list[Section]]] = {
    **{s: parse_markdown for s in MARKDOWN_SUFFIXES},
    **{s: parse_html for s in HTML_SUFFIXES},
    **{s: parse_text for s in TEXT_SUFFIXES},
    **{s: parse_pdf for s in PDF_SUFFIXES},
}


def parser_for(name: str) -> Callable[[bytes], list[Section]] | None:
    """The parser of a file name's suffix (case-insensitive), None when unsupported."""
    dot = name.rfind(".")
    return PARSERS.get(name[dot:].lower()) if dot > name.rfind("/") else None


def parse_document(name: str, data: bytes) -> list[Section]:
    """The sections of one document; ValueError (with the reason) when it is unusable or has no text."""
    parser = parser_for(name)
    if parser is None:
        raise ValueError(f"unsupported document type {name!r}")
    sections = parser(data)
    if not sections:
        raise ValueError("no text in the document")
    return sections
