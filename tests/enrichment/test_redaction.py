"""PII redaction: every planted value goes, ordinary business text stays."""

from __future__ import annotations

import json

import pytest

from llm_assets.enrichment.redaction import PII_KINDS, find_pii, luhn_valid, redact
from llm_assets.sample_data.generator import generate_messages


def test_every_planted_pii_string_is_removed_from_the_sample_events():
    messages = [m for m in generate_messages(3000) if m.pii]
    planted = sum(len(m.pii) for m in messages)
    leaked = []
    for m in messages:
        text = redact(json.loads(m.value)["payload_raw"]).text
        leaked += [(p, text) for p in m.pii if p in text]
    assert planted > 2500  # the sample really plants PII of every kind
    assert leaked == []


@pytest.mark.parametrize(("text", "kind"), [
    ("card 4111 1111 1111 1111 used", "card"),
    ("card 4111-1111-1111-1111 used", "card"),
    ("card 4111.1111.1111.1111 used", "card"),
    ("card 4111111111111111 used", "card"),
    ("amex 3782 822463 10005 used", "card"),
    ("to IBAN DE89 3704 0044 0532 0130 00 today", "iban"),
    ("to IBAN DE89370400440532013000 today", "iban"),
    ("to GB29 NWBK 6016 1331 9268 19 EUR", "iban"),
    ("call +44 20 7123 4567 now", "phone"),
    ("call +1 (415) 555-2671 now", "phone"),
    ("call +49 30 123456 now", "phone"),
    ("call +33 6 12 34 56 78 now", "phone"),
    ("call +91 9812345678 now", "phone"),
    ("mail li.wei42@mail.example.org now", "email"),
    ("ssn 123-45-6789 linked", "national_id"),
    ("nino AB 12 34 56 C linked", "national_id"),
    ("nino AB123456C linked", "national_id"),
])
def test_each_kind_is_replaced_by_its_typed_placeholder(text, kind):
    result = redact(text)
    assert result.counts_by_kind == {kind: 1}
    assert f"<{kind.upper()}>" in result.text
    assert find_pii(result.text) == []


@pytest.mark.parametrize("text", [
    "Partner P-017 reports 120.50 EUR for reference REF-123456 but our ledger shows 1,204.75 EUR.",
    "Batch import from ledger rejected 14 rows on 2026-11-18 at 12:30:05Z; merchant M-4821.",
    "Settlement 20261118 for 9,000.00 EUR, fee 0.35 EUR per item, 37 items, run id 1234567890123.",
    "Entity ENT-00042, device DEV-0012345, velocity_1h 3.2, chargeback_ratio 0.0123, tier high.",
    "Call the desk on weekdays 9-17; ticket 2026/11/18-0042 escalated to level 2 of 5.",
    "Placeholders stay: <CARD>, <EMAIL>, <PHONE>, <IBAN>, <NATIONAL_ID>.",
])
def test_ordinary_business_text_is_left_untouched(text):
    assert redact(text).text == text
    assert find_pii(text) == []


def test_card_like_numbers_failing_luhn_are_kept():
    assert not luhn_valid("4111111111111112")
    assert redact("order 4111 1111 1111 1112 shipped").text == "order 4111 1111 1111 1112 shipped"


def test_a_card_followed_by_another_number_is_still_redacted():
    assert redact("card 4111 1111 1111 1111 12 disputes").text == "card <CARD> 12 disputes"


def test_iban_with_a_national_checksum_error_is_still_redacted():
    # Spain's own account checksum does not hold, the IBAN mod-97 does: still someone's account.
    assert redact("to ES94 5197 8378 0585 6732 6819 was").text == "to <IBAN> was"


def test_redaction_is_idempotent_and_counts_every_value():
    text = ("Customer anna1@example.com paid with 5500 0000 0000 0004 from NL91 ABNA 0417 1643 00, "
            "phone +33 6 12 34 56 78, ssn 123-45-6789.")
    once = redact(text)
    assert once.counts_by_kind == {"email": 1, "card": 1, "iban": 1, "phone": 1, "national_id": 1}
    assert once.total == 5
    assert redact(once.text).text == once.text
    assert sorted(find_pii(text)) == sorted(PII_KINDS)
