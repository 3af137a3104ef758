"""PII redaction: every planted value goes, ordinary business text stays."""

from __future__ import annotations

import json
import random

import pytest

from llm_assets.lib.redaction import PII_KINDS, find_pii, luhn_valid, pii_spans, redact
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_messages
from tests.support import pii_corpus

pytestmark = pytest.mark.unit


def _leftover(value: str, redacted: str, sentence: str) -> bool:
    """True when a letter or digit of `value` is still in clear where it was planted."""
    spans = pii_corpus.redacted_spans(sentence, redacted)
    start = sentence.index(value)
    return spans is None or any(
        ch.isalnum() and not any(a <= start + i < b for a, b in spans) for i, ch in enumerate(value))


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
    ("amex 378282246310005 used", "card"),
    ("mastercard 2-series 2223 0031 2200 3222 used", "card"),
    ("diners 3056 9309 0259 04 used", "card"),
    ("jcb 3530 1113 3330 0000 used", "card"),
    ("discover 6011 1111 1111 1117 used", "card"),
    ("unionpay 6200 0000 0000 0005 used", "card"),
    ("maestro 6759 6498 2643 8453 used", "card"),
    ("to IBAN DE89 3704 0044 0532 0130 00 today", "iban"),
    ("to IBAN DE89370400440532013000 today", "iban"),
    ("to IBAN de89 3704 0044 0532 0130 00 today", "iban"),
    ("to GB29 NWBK 6016 1331 9268 19 EUR", "iban"),
    ("to FR14 2004 1010 0505 0001 3M02 606 today", "iban"),
    ("to NO93 8601 1117 947 today", "iban"),
    ("call +44 20 7123 4567 now", "phone"),
    ("call +1 (415) 555-2671 now", "phone"),
    ("call +49 30 123456 now", "phone"),
    ("call +33 6 12 34 56 78 now", "phone"),
    ("call +91 9812345678 now", "phone"),
    ("call (212) 555-0134 now", "phone"),
    ("call 212.555.0134 x123 now", "phone"),
    ("call 1-212-555-0134 ext. 45 now", "phone"),
    ("call 020 7946 0018 now", "phone"),
    ("call 07700 900123 now", "phone"),
    ("call +44 (0)20 7946 0018 now", "phone"),
    ("call 030 1234567 now", "phone"),
    ("call (030) 1234567 now", "phone"),
    ("call 0151/23456789 now", "phone"),
    ("call 06 12 34 56 78 now", "phone"),
    ("call 01.23.45.67.89 now", "phone"),
    ("call 98123 45678 now", "phone"),
    ("call 022 2345 6789 now", "phone"),
    ("call (11) 91234-5678 now", "phone"),
    ("call 0044 20 7946 0018 now", "phone"),
    ("mail li.wei42@mail.example.org now", "email"),
    ("mail Anna.Schmidt+Refunds@EU.Example.COM now", "email"),
    ("ssn 123-45-6789 linked", "national_id"),
    ("SSN 123456789 linked", "national_id"),
    ("itin 912-70-1234 linked", "national_id"),
    ("nino AB 12 34 56 C linked", "national_id"),
    ("nino AB123456C linked", "national_id"),
    ("nino QQ 12 34 56 C linked", "national_id"),
    ("INSEE 2 55 08 14 168 025 38 linked", "national_id"),
    ("Steuer-ID 86 095 742 719 linked", "national_id"),
    ("Aadhaar 2345 6789 0124 linked", "national_id"),
    ("CPF 529.982.247-25 linked", "national_id"),
    ("CPF 52998224725 linked", "national_id"),
    ("DNI 12345678Z linked", "national_id"),
    ("NIE X1234567L linked", "national_id"),
    ("codice fiscale RSSMRA85T10A562S linked", "national_id"),
])
def test_each_kind_is_replaced_by_its_typed_placeholder(text, kind):
    result = redact(text)
    assert result.counts_by_kind == {kind: 1}
    assert f"<{kind.upper()}>" in result.text
    assert not any(ch.isdigit() for ch in result.text.split(f"<{kind.upper()}>")[1].split()[0])
    assert find_pii(result.text) == []


_FORMAT_CLASSES = (
    [(fmt, make) for fmt, make in pii_corpus.PHONE_FORMATS + pii_corpus.CARD_FORMATS + pii_corpus.EMAIL_FORMATS]
    + [(make(random.Random(0)).fmt, lambda rng, make=make: make(rng).value) for make in pii_corpus.NATIONAL_ID_FORMATS]
    + [(f"iban/{country}", lambda rng, country=country: pii_corpus.iban_format(country)(rng)[1])
       for country in pii_corpus.SEPA_BBAN]
)


@pytest.mark.parametrize(("fmt", "make"), _FORMAT_CLASSES, ids=[fmt for fmt, _ in _FORMAT_CLASSES])
def test_every_format_class_planted_in_a_sentence_is_redacted(fmt, make):
    rng = random.Random(fmt)
    for _ in range(5):
        value = make(rng)
        label = "SSN" if fmt.endswith("SSN/bare") else "document"
        for sentence in (f"Ticket REF-2026-000123 ({label} {value}) reopened on 2026-11-18 10:22:01.",
                         f'{{"{label}": "{value}", "amount": "1,234.56 EUR"}}',
                         f"{label} {value}."):
            redacted = redact(sentence).text
            assert not _leftover(value, redacted, sentence), (value, redacted)


@pytest.mark.parametrize("text", [
    "Partner P-017 reports 120.50 EUR for reference REF-123456 but our ledger shows 1,204.75 EUR.",
    "Batch import from ledger rejected 14 rows on 2026-11-18 at 12:30:05Z; merchant M-4821.",
    "Settlement 20261118 for 9,000.00 EUR, fee 0.35 EUR per item, 37 items, run id 1234567890123.",
    "Entity ENT-00042, device DEV-0012345, velocity_1h 3.2, chargeback_ratio 0.0123, tier high.",
    "Call the desk on weekdays 9-17; ticket 2026/11/18-0042 escalated to level 2 of 5.",
    "Placeholders stay: <CARD>, <EMAIL>, <PHONE>, <IBAN>, <NATIONAL_ID>.",
    "Amounts 1,234.56 EUR, 1.234,56 €, 12 345,67 EUR, $12,345.67, R$ 1.234,56 and 120.50 all reconciled.",
    "Logged at 2026-11-18 10:22:01, 2026-11-18T10:22:01.123456+01:00, 18/11/2026 10:22 and 11/18/2026.",
    "Compact times 20261118102201, epoch 1763461321 and 1763461321123 are not phones.",
    "Upgraded v1.2.3.4 to 4.18.0-553.el9 on host 10.0.0.12 and 192.168.100.254:8080.",
    "Order no. 4829173650, invoice 2026001234, SKU 4006381333931, PO 6500012345, claim 0123456789.",
    "Partner P-001 and ENT-00042 share REF-2026-001234, ORD-20261118-000123 and B-20261118-0042.",
    "UETR 01486172-2377-477a-a4b4-6628394d7db4, ISBN 978-3-16-148410-0, BIC DEUTDEFF500, MCC 5411.",
    "Routing 021000021, sort code 20-00-00, offset 1234567890, lat 48.8566, lon 2.3522, +5.25%.",
    "Mon, 18 Nov 2026 10:22:01 +0100: 3 x 120.50 = 361.50, rows 1-1000, duration 00:15:30.",
    "Totals 2345678901 EUR and USD 2345678901 are amounts; commit 4576150205 is a hash.",
])
def test_ordinary_business_text_is_left_untouched(text):
    assert redact(text).text == text
    assert find_pii(text) == []


def test_the_independent_corpus_meets_the_recall_and_precision_goals():
    score = pii_corpus.score(lambda t: redact(t).text, pii_corpus.pii_sentences(), pii_corpus.clean_sentences())
    assert sum(score.planted.values()) >= 2000 and score.planted.keys() == set(PII_KINDS)
    recall = {kind: score.recall(kind) for kind in PII_KINDS}
    assert all(r >= 0.995 for r in recall.values()), (recall, score.leaks[:10])
    assert score.precision >= 0.97, (score.precision, score.false_positives[:10])
    assert score.misaligned == 0


def test_a_list_of_phones_is_redacted_number_by_number():
    assert redact("Tel 030 123456 / 0171 2345678 today").text == "Tel <PHONE> / <PHONE> today"
    assert redact("call 06 12 34 56 78 / 01 23 45 67 89").text == "call <PHONE> / <PHONE>"
    assert redact("(212 555 0134)").text == "(<PHONE>)"
    assert redact("Tel.+44 20 7946 0018, Ph.0612345678").text == "Tel.<PHONE>, Ph.<PHONE>"


def test_a_bare_number_after_an_identifier_word_is_that_identifier():
    assert redact("order 2125550134 shipped").text == "order 2125550134 shipped"
    assert redact("customer 2125550134 called").text == "customer <PHONE> called"
    assert redact("SKU 4111111111111111").text == "SKU 4111111111111111"
    assert redact("card 4111111111111111").text == "card <CARD>"


def test_card_like_numbers_failing_luhn_are_kept():
    assert not luhn_valid("4111111111111112")
    assert redact("order 4111 1111 1111 1112 shipped").text == "order 4111 1111 1111 1112 shipped"


def test_a_card_followed_by_another_number_is_still_redacted():
    assert redact("card 4111 1111 1111 1111 12 disputes").text == "card <CARD> 12 disputes"


def test_iban_with_a_national_checksum_error_is_still_redacted():
    # Spain's own account checksum does not hold, the IBAN mod-97 does: still someone's account.
    assert redact("to ES94 5197 8378 0585 6732 6819 was").text == "to <IBAN> was"


def test_an_iban_is_not_extended_into_the_following_word():
    assert redact("IBAN GB29NWBK60161331926819 EUR 120.50").text == "IBAN <IBAN> EUR 120.50"


def test_spans_are_ordered_disjoint_and_rebuild_the_redacted_text():
    text = ("Customer anna1@example.com paid with 5500 0000 0000 0004 from NL91 ABNA 0417 1643 00, "
            "phone (212) 555-0134, ssn 123-45-6789.")
    spans = pii_spans(text)
    assert [kind for _, _, kind in spans] == ["email", "card", "iban", "phone", "national_id"]
    assert all(b <= c for (_, b, _), (c, _, _) in zip(spans, spans[1:]))
    rebuilt, pos = "", 0
    for start, end, kind in spans:
        rebuilt += text[pos:start] + f"<{kind.upper()}>"
        pos = end
    assert rebuilt + text[pos:] == redact(text).text


def test_redaction_is_idempotent_and_counts_every_value():
    text = ("Customer anna1@example.com paid with 5500 0000 0000 0004 from NL91 ABNA 0417 1643 00, "
            "phone +33 6 12 34 56 78, ssn 123-45-6789.")
    once = redact(text)
    assert once.counts_by_kind == {"email": 1, "card": 1, "iban": 1, "phone": 1, "national_id": 1}
    assert once.total == 5
    assert redact(once.text).text == once.text
    assert sorted(find_pii(text)) == sorted(PII_KINDS)
