"""Writes `kb/vpn_policy.pdf`: a small, valid, one-page PDF built by hand (no PDF library).

The pack's KB needs one PDF whose text a PDF reader (pypdf) can extract: one page, the standard
Helvetica font (no embedding needed), one uncompressed text stream, an exact cross-reference
table. The output is byte-for-byte the same on every run, so the committed file can be rebuilt:

    .venv/bin/python tests/packs/it_service_desk/make_pdf.py
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "kb" / "vpn_policy.pdf"

TITLE = "Remote access (VPN) policy"
# (heading?, text) lines, top to bottom; headings are set in a larger size.
LINES = [
    (True, TITLE),
    (False, "Version 3, owner: network team, approved by the CISO."),
    (True, "1. Who may use the VPN"),
    (False, "Every employee and contractor with a company laptop may use the VPN client."),
    (False, "Personal devices must never connect to the VPN, not even with a browser."),
    (True, "2. Connection rules"),
    (False, "Sessions end after 12 hours and after 30 minutes without traffic."),
    (False, "Client versions below 5.2 are refused by the gateways."),
    (False, "Do not share a VPN session or certificate with anyone."),
    (True, "3. Outages"),
    (False, "If the VPN is down for several people, the service desk pages the network on-call."),
    (False, "Work offline or come to the office; status updates are posted on the IT status page."),
    (True, "4. Lost devices and suspicious logins"),
    (False, "Report a lost laptop at once: its VPN certificate is revoked and the device is wiped."),
    (False, "A VPN login from an unexpected country is handled as a security incident."),
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def content_stream() -> bytes:
    ops = ["BT", "72 770 Td"]
    for heading, text in LINES:
        size, lead = (14, 22) if heading else (11, 16)
        ops.append(f"/F1 {size} Tf {lead} TL T* ({_escape(text)}) Tj")
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("latin-1")


def build_pdf() -> bytes:
    stream = content_stream()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
        b"<< /Title (%s) /Producer (llm-assets make_pdf.py) >>" % _escape(TITLE).encode("latin-1"),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += (b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, len(objects), xref_at))
    return bytes(out)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(build_pdf())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
