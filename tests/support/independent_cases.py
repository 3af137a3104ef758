"""Independent labelled corpus of payments-operations case texts.

How the corpus was written
--------------------------
Every text in ``independent_cases.jsonl`` was written one by one (no templates)
by a separate writing agent, given only the five labels' one-line definitions and
told not to open the project's sample data generator, its phrasing parts, the
knowledge base or the golden files (it did not). The texts were not derived from, or
checked against, any of those, so none of the project's own phrasing can have
leaked in.

The writer varied the voice on purpose (terse alert lines, automated monitor
output, partner and customer emails, customer chat messages, agent ticket
notes, internal notes and forwarded messages), as well as the length, the
vocabulary and the identifiers. The corpus also includes deliberately hard
cases, such as a fraud alert sitting in the wrong queue (``routing_error``) or
a partner asking a general question (``other``). The texts contain no personal
data: no email addresses, phone numbers, card numbers, IBANs or national ids.

Label definitions used while writing:

- ``data_quality``: null or malformed fields, invalid currency codes, shifted
  columns, duplicate ids, missing exchange rates.
- ``partner_mismatch``: a partner's settlement report, fees or accounts differ
  from our ledger or contract.
- ``fraud_suspected``: card velocity, account takeover, chargeback spikes,
  synthetic identities.
- ``routing_error``: the case sits in a queue that does not own its topic
  (misrouted tickets, wrong team or queue).
- ``other``: general enquiries and feedback that need no investigation.

This corpus is for held-out evaluation only. It must never be used to train,
tune, calibrate or pick thresholds for anything in the project.

Each line of the JSONL file is one object:
``{"id": "ind-0001", "label": ..., "text": ..., "voice": ...}``.
"""

from __future__ import annotations

from pathlib import Path

from llm_assets.domain.golden import json_object_line

LABELS: tuple[str, ...] = (
    "data_quality",
    "partner_mismatch",
    "fraud_suspected",
    "routing_error",
    "other",
)

PATH: Path = Path(__file__).with_name("independent_cases.jsonl")


def load_independent_cases() -> list[dict]:
    """Read and check the corpus, and return its records in file order.

    Raises ValueError for a malformed line, a label not in LABELS, a
    duplicate or missing id, or empty text.
    """
    cases: list[dict] = []
    seen_ids: set[str] = set()
    with PATH.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json_object_line(line)
            except ValueError as exc:
                raise ValueError(f"{PATH.name}:{lineno}: {exc}") from None
            case_id = record.get("id")
            if not isinstance(case_id, str) or not case_id:
                raise ValueError(f"{PATH.name}:{lineno}: missing id")
            if case_id in seen_ids:
                raise ValueError(f"{PATH.name}:{lineno}: duplicate id {case_id!r}")
            seen_ids.add(case_id)
            if record.get("label") not in LABELS:
                raise ValueError(
                    f"{PATH.name}:{lineno}: unknown label {record.get('label')!r}"
                )
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{PATH.name}:{lineno}: empty text for {case_id!r}")
            cases.append(record)
    return cases
