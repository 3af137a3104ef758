"""A tiny KB of the documents teams have (Markdown, HTML, a real PDF) and a pack that points at it."""

from __future__ import annotations

from pathlib import Path

import yaml

from llm_assets.domain.pack import PACK_FILE, PACKS_DIR

PDF_SENTENCE = "Chargeback evidence must be uploaded to the card network portal within seven calendar days."
PDF_QUERY = "how many days do we have to upload chargeback evidence to the card network"

RUNBOOK_MD = """---
owner: payments-ops
---
# Card velocity runbook

Use this runbook when one card is used in several countries within minutes.

## Detection

The fraud engine raises a velocity alert after three countries in ten minutes.

## Escalation

Freeze the card and page the fraud on-call.

### Out of hours

Call the on-call.

## Closing

Call the on-call.
"""

REFUNDS_HTML = """<!doctype html>
<html><head><title>Refund policy</title><style>p { color: red }</style></head>
<body>
<p>Applies to every merchant <b>without</b> exception.</p>
<h1>Refund policy</h1>
<p>Refunds go back to the original payment method.</p>
<h2>Partial refunds</h2>
<ul><li>Allowed once per order.</li><li>Never above the captured amount.</li></ul>
<script>track("refunds")</script>
<h2>Currency</h2>
<p>A refund is paid in the currency of the capture.</p>
</body></html>
"""


def minimal_pdf(pages: list[list[str]], title: str = "Chargebacks") -> bytes:
    """A valid PDF written by hand: the standard Helvetica font (nothing embedded), one
    uncompressed text stream per page, one text line per entry, an exact cross-reference table."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>", None,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Title (%s) /Producer (llm-assets tests) >>" % escape(title).encode("latin-1"),
    ]
    kids = []
    for lines in pages:
        ops = ["BT", "/F1 11 Tf", "16 TL", "72 740 Td"] + [f"({escape(line)}) Tj T*" for line in lines] + ["ET"]
        stream = ("\n".join(ops) + "\n").encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % (len(objects)))
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


CHARGEBACKS_PDF = minimal_pdf([
    ["Chargebacks handbook", PDF_SENTENCE, "Late evidence (after day seven) is rejected by the network."],
    ["Representment", "Attach the signed delivery receipt and the customer's order history."],
])

# relative path -> bytes: a Markdown runbook at the top, an HTML policy and a PDF in folders.
DOCUMENTS: dict[str, bytes] = {
    "card_velocity.md": RUNBOOK_MD.encode(),
    "policies/refunds.html": REFUNDS_HTML.encode(),
    "guides/chargebacks.pdf": CHARGEBACKS_PDF,
}


def write_documents(root: Path, documents: dict[str, bytes] | None = None) -> Path:
    for name, data in (DOCUMENTS if documents is None else documents).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_pack(folder: Path, kb: str, retrieval_queries: str | None = None) -> Path:
    """A copy of the payments pack (taxonomy, prompts) whose KB is `kb` and whose retrieval golden
    set is `retrieval_queries` (none by default)."""
    shipped = PACKS_DIR / "payments_ops"
    raw = yaml.safe_load((shipped / PACK_FILE).read_text())
    raw["sources"] = {"kb": kb, "retrieval_queries": retrieval_queries}
    (folder / "prompts").mkdir(parents=True, exist_ok=True)
    for template in (shipped / "prompts").glob("*.j2"):
        (folder / "prompts" / template.name).write_text(template.read_text())
    (folder / PACK_FILE).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder
