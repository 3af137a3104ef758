"""PII redaction: the only way case text reaches a prompt, a log line or an output column.

`redact(text)` replaces emails, Luhn-valid card numbers, international phone numbers, IBANs
and national ids (US SSN shape, UK NINO) with typed placeholders (`<EMAIL>`, `<CARD>`,
`<PHONE>`, `<IBAN>`, `<NATIONAL_ID>`) and counts what it replaced; `find_pii(text)` lists
the kinds still present, for the "no PII in outputs" checks.

Why these libraries: Microsoft Presidio is the usual choice, but its recognizers need spaCy
language models downloaded from a model hub, which cannot be reached from here (nor from
many production clusters). Instead we validate, rather than just pattern-match, with two
maintained, offline libraries: `phonenumbers` (Google's libphonenumber metadata, so
`+33 6 12 34 56 78` and `+1 (415) 555-2671` are recognised while `120.50 EUR` is not) and
`python-stdnum` (the IBAN mod-97 checksum). Cards are Luhn-checked here.

Order matters: IBANs and cards are replaced before phones, so a long digit group is never
half-eaten by the phone matcher; emails go first so their local parts never look like ids.
Pure module: no Dagster import.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from stdnum import iban as stdnum_iban

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "card": "<CARD>",
    "national_id": "<NATIONAL_ID>",
    "phone": "<PHONE>",
}
PII_KINDS = tuple(PLACEHOLDERS)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Country code, check digits, then 11..30 alphanumerics, optionally in groups separated by one space.
_IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")
# 13..19 digits, each optionally followed by one separator (space, dash, dot): any card spacing.
_CARD_CANDIDATE = re.compile(r"(?<![\w.-])\d(?:[ .-]?\d){12,18}(?!\w)")
# US SSN shape: never area 000/666/9xx, group 00 or serial 0000; dashes or spaces, used consistently.
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")
# UK National Insurance number: two prefix letters (never D, F, I, Q, U, V; second never O), six digits
# (optionally in pairs), suffix A-D. Prefixes that HMRC never issues are still redacted: recall first.
_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")


@dataclass(frozen=True)
class Redacted:
    """Redacted text and how many values of each kind were replaced."""

    text: str
    counts_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts_by_kind.values())


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by every card scheme."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _replace_emails(text: str, counts: Counter) -> str:
    def sub(m: re.Match) -> str:
        counts["email"] += 1
        return PLACEHOLDERS["email"]

    return _EMAIL.sub(sub, text)


def _iban_valid(candidate: str) -> bool:
    # The ISO 13616 mod-97 check only: national BBAN checksums (Spain's CCC, ...) are skipped on
    # purpose, because a mistyped account number is still someone's personal data.
    return stdnum_iban.is_valid(candidate, check_country=False)


def _replace_ibans(text: str, counts: Counter) -> str:
    # The candidate pattern is greedy (it may run into a following upper-case word such as "EUR"),
    # so the longest prefix that passes the mod-97 check wins.
    out, pos = [], 0
    while (m := _IBAN_CANDIDATE.search(text, pos)) is not None:
        span = m.group(0)
        end = next((e for e in range(len(span), 14, -1)
                    if span[e - 1] != " " and _iban_valid(span[:e])), None)
        if end is None:
            out.append(text[pos:m.start() + 1])
            pos = m.start() + 1
            continue
        out.append(text[pos:m.start()] + PLACEHOLDERS["iban"])
        counts["iban"] += 1
        pos = m.start() + end
    out.append(text[pos:])
    return "".join(out)


def _replace_cards(text: str, counts: Counter) -> str:
    def sub(m: re.Match) -> str:
        run = m.group(0)
        digits = re.sub(r"\D", "", run)
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            counts["card"] += 1
            return PLACEHOLDERS["card"]
        # The run may have swallowed a neighbouring number ("4111 1111 1111 1111 12 disputes"):
        # try the longest run of whole digit groups that passes Luhn.
        parts = re.split(r"([ .-])", run)
        groups = parts[0::2]
        for size in range(len(groups) - 1, 0, -1):
            for i in range(len(groups) - size + 1):
                window = "".join(groups[i:i + size])
                if 13 <= len(window) <= 19 and luhn_valid(window):
                    counts["card"] += 1
                    return "".join(parts[:2 * i]) + PLACEHOLDERS["card"] + "".join(parts[2 * (i + size) - 1:])
        return run

    return _CARD_CANDIDATE.sub(sub, text)


def _replace_national_ids(text: str, counts: Counter) -> str:
    def sub(m: re.Match) -> str:
        counts["national_id"] += 1
        return PLACEHOLDERS["national_id"]

    return _NINO.sub(sub, _SSN.sub(sub, text))


def _replace_phones(text: str, counts: Counter) -> str:
    # No default region: only numbers written in international form (+CC ...) are matched, which
    # keeps amounts, references and dates out; POSSIBLE leniency accepts any number whose length
    # fits its country's plan, so new ranges not yet in the metadata are still caught.
    matches = list(phonenumbers.PhoneNumberMatcher(text, None, leniency=phonenumbers.Leniency.POSSIBLE))
    for m in reversed(matches):
        text = text[:m.start] + PLACEHOLDERS["phone"] + text[m.end:]
    counts["phone"] += len(matches)
    return text


def redact(text: str) -> Redacted:
    """Replace every PII value in `text` with its typed placeholder. Idempotent."""
    if not text:
        return Redacted(text or "", {})
    counts: Counter = Counter()
    for step in (_replace_emails, _replace_ibans, _replace_cards, _replace_national_ids, _replace_phones):
        text = step(text, counts)
    return Redacted(text, {k: v for k, v in counts.items() if v})


@lru_cache(maxsize=8192)
def redact_cached(text: str) -> str:
    """`redact(text).text`, memoised: KB documents repeat across thousands of prompts."""
    return redact(text).text


def find_pii(text: str) -> list[str]:
    """The kinds of PII present in `text`, one entry per value found (empty when clean)."""
    counts = redact(text).counts_by_kind
    return [kind for kind in PII_KINDS for _ in range(counts.get(kind, 0))]
