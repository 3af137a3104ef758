"""PII redaction: the only way case text reaches a prompt, a log line or an output column.

`redact(text)` replaces emails, card numbers, phone numbers, IBANs and national ids with typed
placeholders (`<EMAIL>`, `<CARD>`, `<PHONE>`, `<IBAN>`, `<NATIONAL_ID>`) and counts what it
replaced; `pii_spans(text)` says where they are; `find_pii(text)` lists the kinds still present,
for the "no PII in outputs" checks. Recall comes first (a value missed here reaches an LLM
endpoint in clear); `benchmarks/pii_recall.py` measures recall per kind and precision on a
corpus written apart from the sample generator (`tests/support/pii_corpus.py`).

What is recognised:
- emails: any local part (plus-addressing, dots, capitals, Unicode letters) at a dotted domain;
- IBANs of every country in the ISO 13616 registry (all of SEPA), grouped or not, upper or lower
  case: mod-97 and the country's BBAN layout must hold (not the national BBAN checksums: a
  mistyped account number is still someone's account);
- cards: 12..19 digits, in one block, in groups of four, or Amex/Diners' 4-6-5/4-6-4 (spaces,
  dashes, dots, no-break spaces), that start with a brand's issuer prefix (Visa, Mastercard
  incl. 2-series, Amex, Discover, JCB, Diners, UnionPay, Maestro, RuPay, Mir) and pass Luhn;
- phones: international (`+CC`, `00CC`, with or without `(0)`) and the national formats of the
  US and Canada, the UK, Germany, France, India and Brazil (and other countries dialling a
  trunk 0), with parentheses, spaces, dots, dashes, slashes and extensions (`x123`, `ext. 45`);
  a list such as `030 123456 / 0171 2345678` is split into its numbers;
- national ids: US SSN and ITIN, UK NINO, French NIR (INSEE), German tax id (IdNr), Indian
  Aadhaar, Brazilian CPF, Spanish DNI and NIE, Italian codice fiscale. Their own layouts
  (`123-45-6789`, `AB 12 34 56 C`, `123.456.789-09`, `2345 6789 0124`) are enough, with the
  check digits where the id has them; a bare 9-digit SSN needs a word such as "SSN" before it.

What stays (precision): amounts, dates and timestamps (ISO, `18/11/2026 10:22`, compact
`20261118102201`, epoch), versions, IP addresses, UUIDs, and ids glued to a prefix (`P-001`,
`ENT-00042`, `REF-2026-001234`). A bare digit run right after an identifier word ("order no.",
"invoice", "run id", "SKU", "PO", "commit", ...) is that identifier, not a phone, card or id.

Why these libraries: Microsoft Presidio is the usual choice, but its default engine needs spaCy
language models downloaded from a model hub, and with its pattern recognizers alone it found
78% of the benchmark's values at 71% precision (no 2-series Mastercards, no lower-case IBANs,
no NIR or CPF; epoch times and invoice numbers taken for phones), at ~40x the cost. We validate
instead of just pattern-matching, with two maintained, offline libraries: `phonenumbers`
(Google's libphonenumber metadata: the lengths and ranges of each country's numbering plan,
so `(212) 555-0134` and `030 1234567` are phones while `120.50 EUR` is not) and `python-stdnum`
(the IBAN registry, and the check digits of CPF, Aadhaar, NIR, IdNr, DNI/NIE and codice
fiscale). Candidates come from our own regular expressions and phonenumbers is asked only about
digit groups already shaped like a phone: its `PhoneNumberMatcher`, run once per region over
the text, cost ~10x the whole of `redact` and took dates and amounts for phones (54% precision).

Order matters: each finder masks what it found (or, for dates, times and IP addresses, what
must stay) before the next one runs. Emails go first (their local parts can look like ids),
then IBANs and cards (long checksummed runs, never half-eaten by a phone), then the look-alikes
are masked, then international phones (`+CC` is the strongest signal), national ids, and
national phones last. Every pattern is linear in the text (token-start anchors, possessive
runs) and a phone is at most 8 digit groups, so even a 16 KB payload built to be slow takes a
fraction of a second (the benchmark prints the slowest). Pure module: no Dagster import.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumber
from stdnum import numdb
from stdnum.br import cpf
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale

from llm_assets.domain import DomainPack, current_pack
from llm_assets.domain.pack import pii_validator

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "card": "<CARD>",
    "national_id": "<NATIONAL_ID>",
    "phone": "<PHONE>",
}
PII_KINDS = tuple(PLACEHOLDERS)  # the built-in kinds; a domain pack turns them off or adds its own
_IBAN_REGISTRY = numdb.get("iban")

# Found values are overwritten with this (same length, so offsets hold) before the next finder runs.
_MASK = "\x00"
# Separators inside a number: space, no-break and narrow no-break spaces, dot, dash, slash.
_SEPS = " \u00a0\u202f.\\-/"

# Starts only where a token starts and never backtracks into a label: linear on any input.
_EMAIL = re.compile(r"(?<![\w.%+'-])[\w.%+'-]++@(?:[^\W_][\w-]*+\.(?=[^\W_]))++[^\W\d_]{2,}+")

# Country code, check digits, then 11..30 letters/digits, optionally grouped by one separator.
_IBAN_CANDIDATE = re.compile(r"(?<![\w-])[A-Za-z]{2}\d{2}(?:[ \u00a0\u202f-]?[A-Za-z0-9]){11,30}")

# 12..19 digits, each optionally followed by one separator: any card spacing.
_CARD_CANDIDATE = re.compile(r"(?<![\w.+-])\d(?:[ \u00a0\u202f.-]?\d){11,18}(?!\w)")
# Issuer prefixes of the card brands: Visa 4; Mastercard 51-55 and 2221-2720; Amex 34, 37;
# Diners 30, 36, 38, 39; JCB 35; Discover 6011, 644-649, 65; UnionPay 62, 81; Maestro 50, 56-69;
# RuPay 60, 65, 508; Mir 2200-2204. Lengths are not tied to the brand (recall first: a 16-digit
# "Amex" typed into a ticket is still a card number); digits starting 0, 1, 7, 9 are never cards.
_CARD_PREFIX = re.compile(r"[3-6]|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720|20[0-4])|81")

# Dates and times written as one digit run (20261118, 202611181022, 20261118102201).
_COMPACT_DATETIME = re.compile(
    r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d)?)?")
# Dates, times and IPv4 addresses: not PII, but digit groups a phone pattern would take (05/04/2026
# fits a German number's length). They are masked before phones and national ids are looked for.
_TIME = r"(?:[T ]?\d{1,2}:\d\d(?::\d\d)?(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
_LOOKALIKES = re.compile(
    rf"(?=\d)(?<![\d.])(?:(?:19|20)\d\d([-/.])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])(?!\d){_TIME}?"
    rf"|(?:0?[1-9]|[12]\d|3[01])([-/.])(?:0?[1-9]|[12]\d|3[01])\2(?:19|20)\d\d(?!\d)(?: ?{_TIME})?"
    rf"|\d{{1,2}}:\d\d(?::\d\d)?(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"
    rf"|(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){{3}}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?::\d{{1,5}})?(?![\d.]|\.\d))")
# A bare digit run right after one of these words identifies that thing, not a person.
_ID_CONTEXT = re.compile(
    r"\b(?:order|invoice|inv|ref|reference|batch|run|ticket|case|sku|ean|gtin|upc|isbn|tracking|txn|transaction|"
    r"trace|request|job|build|utr|rrn|arn|uetr|e2e|item|serial|shipment|parcel|container|settlement|payout|"
    r"mandate|contract|terminal|device|session|claim|policy|member|po|purchase order|booking|reservation|voucher|"
    r"coupon|loan|receipt|record|incident|routing|aba|sort code|swift|bic|lot|seq|sequence|offset|msg|message|"
    r"commit|sha|hash|checksum)"
    r"(?:[\s:#=.-]*(?:id|no|nr|num|number|ref|#))?[\s:#=.(\"'-]*$", re.IGNORECASE)
# A bare digit run next to a currency is an amount.
_CURRENCY_BEFORE = re.compile(r"(?:\b(?:EUR|USD|GBP|CHF|INR|BRL|JPY|CAD|AUD)|[$€£₹¥])\s*$")
_CURRENCY_AFTER = re.compile(r"\s*(?:(?:EUR|USD|GBP|CHF|INR|BRL|JPY|CAD|AUD)\b|[€$£₹¥])")
_SSN_CONTEXT = re.compile(r"\b(?:ssn|social security|itin|tin|taxpayer)\b[^\d\n]{0,24}$", re.IGNORECASE)

_SSN = re.compile(r"(?<![\w+.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_BARE = re.compile(r"(?<![\w+.,/#-])\d{9}(?![\w-]|[.,]\d)")
# UK National Insurance number: two letters, six digits (optionally in pairs), suffix A-D, in
# capitals (or lower case without spaces). Any prefix letters: the ones HMRC never issues
# (QQ 12 34 56 C is its documentation example) are what people paste into tickets as well.
_NINO = re.compile(r"(?<![\w-])(?:[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]|[a-z]{2}\d{6}[a-d])(?![\w-])")
_NIR = re.compile(r"(?<![\w+.,-])[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?![\w-]|[.,]\d)")
_IDNR = re.compile(r"(?<![\w+.,-])[1-9]\d( ?)\d{3}\1\d{3}\1\d{3}(?![\w-]|[.,]\d)")
_AADHAAR = re.compile(r"(?<![\w+.,-])[2-9]\d{3}([ \u00a0-]?)\d{4}\1\d{4}(?![\w-]|[.,]\d)")
_CPF = re.compile(r"(?<![\w+.,-])\d{3}(\.?)\d{3}\1\d{3}-?\d{2}(?![\w-]|[.,]\d)")
_DNI = re.compile(r"(?<![\w-])\d{8}[ -]?[A-HJ-NP-TV-Z](?![\w-])", re.IGNORECASE)
_NIE = re.compile(r"(?<![\w-])[XYZ][ -]?\d{7}[ -]?[A-HJ-NP-TV-Z](?![\w-])", re.IGNORECASE)
_CODICE_FISCALE = re.compile(
    r"(?<!\w)[A-Z]{6}[\dLMNP-V]{2}[A-EHLMPR-T][\dLMNP-V]{2}[A-Z][\dLMNP-V]{3}[A-Z](?!\w)", re.IGNORECASE)

# A run of digits and separators that may hold phone numbers; never glued to a word, an amount,
# a path or an id prefix. Windows of whole digit groups inside it are the phone candidates.
# Possessive, so a run glued to a word ("01486172-2377-477a", a UUID) is dropped, not shortened;
# a glued extension ("0134x12", "0134ext.5") is allowed.
_PHONE_RUN = re.compile(rf"(?<![\w/#@$€£%&+\-])(?<!\d[.,])[+(]?\d++(?:[(){_SEPS}]*+\d++)*+(?!(?!x\d|ext)[^\W\d_]|_)",
                        re.IGNORECASE)
_PHONE_EXT = re.compile(r"[ \u00a0]*,?[ \u00a0]*(?:ext\.?|extn\.?|extension|x|#)[ \u00a0]*\d{1,6}(?!\w)", re.IGNORECASE)
_DIGIT_GROUP = re.compile(r"\d+")
_NON_DIGITS = re.compile(r"\D+")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")
# Cheap gates: most sentences have no run of 6 (9) digits, and then most finders need not run.
_SIX_DIGITS = re.compile(r"\d(?:[ \u00a0\u202f.\-/()]{0,3}\d){5}")
_NINE_DIGITS = re.compile(r"\d(?:[ \u00a0\u202f.\-]?\d){8}")
# North American numbering plan: optional 1, area code and exchange starting 2-9.
_NANP = re.compile(r"(?:1[ .-]?)?(?:\([2-9]\d\d\)|[2-9]\d\d)[ .\-\u00a0]?[2-9]\d\d[ .\-\u00a0]?\d{4}")
_IN_MOBILE = re.compile(r"[6-9]\d{4}[ \u00a0-]?\d{5}")
_BR_LOCAL = re.compile(r"\(?[1-9]\d\)?[ \u00a0]?(?:9[ \u00a0]?)?\d{4}[ \u00a0-]?\d{4}")
# Countries whose national format starts with a trunk 0 that is not part of the number.
_TRUNK_ZERO_COUNTRY_CODES = (44, 49, 33, 91, 55, 31, 43, 41, 32, 61, 353, 351, 30, 48, 46, 358)


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


def _only_digits(s: str) -> str:
    return _NON_DIGITS.sub("", s)


def _after_id_word(text: str, start: int) -> bool:
    return _ID_CONTEXT.search(text, max(0, start - 40), start) is not None


def _not_personal(text: str, start: int, end: int) -> bool:
    """A bare digit run that is an identifier, an amount or a compact timestamp, going by its context."""
    return (_after_id_word(text, start) or _COMPACT_DATETIME.fullmatch(text, start, end) is not None
            or _CURRENCY_BEFORE.search(text, max(0, start - 6), start) is not None
            or _CURRENCY_AFTER.match(text, end) is not None)


def _is_card(digits: str) -> bool:
    return 12 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) is not None and luhn_valid(digits)


# --- finders: each takes the (masked) text and returns the spans it claims ---------------------

Span = tuple[int, int]


def _find_emails(text: str) -> list[Span]:
    return [m.span() for m in _EMAIL.finditer(text)]


def _iban_ends(candidate: str) -> list[int]:
    """Ends of the prefixes of `candidate` (longest first) whose ISO 7064 mod-97 check holds.

    Computed for every prefix in one pass (the country code and check digits move to the end,
    letters count as two digits), so stdnum is asked only about prefixes that can be IBANs.
    """
    head = "".join(str(int(c, 36)) for c in candidate[:4])  # country letters and check digits
    scale, head_value = 10 ** len(head), int(head)
    ends, remainder = [], 0
    for i in range(4, len(candidate)):
        ch = candidate[i]
        if not ch.isalnum():
            continue
        value = int(ch, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
        if i + 1 >= 15 and (remainder * scale + head_value) % 97 == 1:
            ends.append(i + 1)
    return ends[::-1]


@lru_cache(maxsize=None)
def _bban_structure(country: str) -> re.Pattern | None:
    """The country's BBAN layout from python-stdnum's copy of the ISO 13616 registry (None: no IBANs)."""
    layout = _IBAN_REGISTRY.info(country)[0][1].get("bban")
    if not layout:
        return None
    classes = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Z0-9]"}
    return re.compile("".join(f"{classes[kind]}{{{n}}}" for n, kind in re.findall(r"(\d+)!([nac])", layout)))


def _bban_fits(candidate: str) -> bool:
    # The national BBAN checksums (Spain's CCC, ...) are not checked on purpose: a mistyped
    # account number is still someone's personal data.
    compact = _NON_ALNUM.sub("", candidate).upper()
    structure = _bban_structure(compact[:2])
    return structure is not None and structure.fullmatch(compact[4:]) is not None


def _find_ibans(text: str) -> list[Span]:
    # The candidate pattern is greedy (it may run into a following word such as "EUR"), so the
    # longest prefix that passes the mod-97 check and the country's BBAN structure wins.
    spans, pos = [], 0
    while (m := _IBAN_CANDIDATE.search(text, pos)) is not None:
        span = m.group(0)
        end = next((e for e in _iban_ends(span) if _bban_fits(span[:e])), None)
        if end is None:
            pos = m.start() + 1
            continue
        spans.append((m.start(), m.start() + end))
        pos = m.start() + end
    return spans


def _card_layout(sizes: list[int]) -> bool:
    """One block, groups of four (the last may be shorter), or Amex/Diners' 4-6-5 and 4-6-4: at most 5 groups."""
    return (len(sizes) == 1 or all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4
            or sizes in ([4, 6, 5], [4, 6, 4]))


def _find_cards(text: str) -> list[Span]:
    spans = []
    for m in _CARD_CANDIDATE.finditer(text):
        run, start = m.group(0), m.start()
        groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(run)]
        if len(groups) == 1 and _after_id_word(text, start):
            continue  # "SKU 4006381333931", "msg 6975873079046587502"; no amount has 12+ digits and Luhn
        counts = [0]
        for a, b in groups:
            counts.append(counts[-1] + b - a)
        # The longest window of whole digit groups laid out as cards are that is a card: the run
        # may have swallowed a neighbouring number ("4111 1111 1111 1111 12 disputes").
        found = next(((groups[i][0], groups[i + size - 1][1]) for size in range(min(len(groups), 5), 0, -1)
                      for i in range(len(groups) - size + 1)
                      if 12 <= counts[i + size] - counts[i] <= 19
                      and _card_layout([b - a for a, b in groups[i:i + size]])
                      and _is_card(_only_digits(run[groups[i][0]:groups[i + size - 1][1]]))), None)
        if found:
            spans.append((start + found[0], start + found[1]))
    return spans


def _find_lookalikes(text: str) -> list[Span]:
    return [m.span() for m in _LOOKALIKES.finditer(text)]


def _find_national_ids(text: str) -> list[Span]:
    spans: list[Span] = []

    def claim(a: int, b: int) -> None:
        if not any(a < e and s < b for s, e in spans):
            spans.append((a, b))

    # Ids with letters: the NINO by its layout alone, the others by their check letter.
    lettered = ((_CODICE_FISCALE, codicefiscale.is_valid), (_NINO, None), (_DNI, dni.is_valid), (_NIE, nie.is_valid))
    if _SIX_DIGITS.search(text) is None:  # every id but the codice fiscale has a run of 6 digits
        lettered = lettered[:1]
    for pattern, valid in lettered:
        for m in pattern.finditer(text):
            if valid is None or valid(m.group(0).upper()):
                claim(*m.span())
    if _NINE_DIGITS.search(text) is None:
        return spans
    for m in _SSN.finditer(text):  # SSN and ITIN layout: never area 000, group 00 or serial 0000
        if m.group(1) != "000" and m.group(3) != "00" and m.group(4) != "0000":
            claim(*m.span())
    for m in _SSN_BARE.finditer(text):
        d = m.group(0)
        if (d[:3] not in ("000", "666") and d[3:5] != "00" and d[5:] != "0000"
                and _SSN_CONTEXT.search(text, max(0, m.start() - 40), m.start())):
            claim(*m.span())
    for pattern, valid in ((_NIR, nir.is_valid), (_CPF, cpf.is_valid), (_IDNR, idnr.is_valid),
                           (_AADHAAR, aadhaar.is_valid)):
        for m in pattern.finditer(text):
            value = m.group(0)
            digits = _only_digits(value)
            if value == digits and _not_personal(text, m.start(), m.end()):
                continue
            if pattern is _CPF and "." in value and "-" in value or valid(value.upper().replace("\u00a0", " ")):
                claim(*m.span())  # 123.456.789-09 is a CPF even with a typo in its check digits
    return spans


def _possible(country_code: int, national: str, valid: bool = False) -> bool:
    """Whether `national` fits the numbering plan of `country_code` (is a valid number, if `valid`)."""
    number = PhoneNumber(country_code=country_code, national_number=int(national))
    return phonenumbers.is_valid_number(number) if valid else phonenumbers.is_possible_number(number)


def _international_phone(raw: str) -> bool:
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    digits = _only_digits(raw)
    if not 8 <= len(digits) <= 15:
        return False
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return False
    # POSSIBLE (length fits the country's plan), not VALID: new ranges not yet in the metadata,
    # and the 555 or Ofcom drama numbers people put in tickets, are still numbers.
    return phonenumbers.is_possible_number(number)


def _national_phone(raw: str, text: str, start: int) -> bool:
    digits = _only_digits(raw)
    n = len(digits)
    bare = raw == digits
    if bare and _not_personal(text, start, start + len(raw)):
        return False
    if _NANP.fullmatch(raw) and _possible(1, digits[-10:]):  # the shape is strict enough, even bare
        return True
    if digits[0] == "0":
        # Written without any separator, a national number is 10-12 digits long (a shorter bare
        # run starting with 0 is more often a routing or account number).
        if not (10 if bare else 8) <= n <= 13 or digits[1] == "0":
            return False
        national = digits[1:]
        # Formatted like a phone, or 10-11 digits as UK and French numbers are: its length fits a
        # plan (fictional ranges such as 07700 900xxx are not "valid" but are phones). Otherwise
        # it must be a valid number somewhere.
        if not bare and any(_possible(cc, national) for cc in _TRUNK_ZERO_COUNTRY_CODES):
            return True
        if bare and n in (10, 11) and any(_possible(cc, national) for cc in (44, 33)):
            return True
        return bare and any(_possible(cc, national, valid=True) for cc in _TRUNK_ZERO_COUNTRY_CODES)
    if _IN_MOBILE.fullmatch(raw) and _possible(91, digits):
        return True
    # Brazil: (11) 91234-5678, (11) 3456-7890; bare only as an 11-digit mobile (a bare 10-digit
    # run is more often an epoch timestamp than a landline).
    return (bool(_BR_LOCAL.fullmatch(raw)) and (n == 11 and digits[2] == "9" or n == 10 and not bare)
            and _possible(55, digits, valid=bare))


def _phone_window(text: str, run_start: int, first: Span, last: Span, international: bool) -> Span | None:
    """The span of the phone number made of digit groups `first`..`last` of a run, or None."""
    start, end = first[0], last[1]
    if start > run_start and text[start - 1] == "+":
        start -= 1
    elif (start > run_start and text[start - 1] == "("
          and text.count("(", start - 1, end) == text.count(")", start, end)):
        start -= 1  # "(212) 555-0134", not the bracket around "(212 555 0134)"
    raw = text[start:end]
    # Not the decimals of an amount or a version, nor a half-open parenthesis.
    if (text[start - 1:start] in (".", ",") and text[start - 2:start - 1].isdigit()
            or text[end:end + 1] in (".", ",") and text[end + 1:end + 2].isdigit() or raw.count("(") != raw.count(")")):
        return None
    if (raw[0] == "+" or raw.startswith("00")) != international:
        return None
    if international:
        return (start, end) if _international_phone(raw) else None
    return (start, end) if _national_phone(raw, text, start) else None


def _find_phones(text: str, international: bool) -> list[Span]:
    spans = []
    for m in _PHONE_RUN.finditer(text):
        groups = [(g.start() + m.start(), g.end() + m.start()) for g in _DIGIT_GROUP.finditer(m.group(0))]
        counts = [0]
        for a, b in groups:
            counts.append(counts[-1] + b - a)
        if counts[-1] < 7:
            continue
        # Every window of whole digit groups that is a phone number, then the set of
        # non-overlapping windows covering most digits (fewest windows on a tie): a list such as
        # "030 123456 / 0171 2345678" is two numbers, "030 / 1234567" one.
        windows: dict[int, list[tuple[int, Span]]] = {}
        for i in range(len(groups)):
            first = groups[i][0]
            if (text[first - 1:first] == "+" or text.startswith("00", first)) != international:
                continue
            # At most 8 digit groups ("+44 (0) 20 7946 0018"), and 4 without a "+", "00" or trunk 0
            # ("1 (212) 555-0134", "(11) 9 1234-5678").
            most = 8 if international or text[first] == "0" else 4
            singles = 0
            for j in range(i, min(i + most, len(groups))):
                digits = counts[j + 1] - counts[i]
                singles += groups[j][1] - groups[j][0] == 1
                if digits > 17 or singles > 3:  # "+33 6 12 ..." has one single digit, "1 2 3 4 5 6 7" is no phone
                    break
                if digits >= 7 and (span := _phone_window(text, m.start(), groups[i], groups[j], international)):
                    windows.setdefault(j, []).append((i, span))
        if not windows:
            continue
        best: list[tuple[int, int, int, Span | None]] = [(0, 0, 0, None)]  # digits, -windows, from, span
        for k in range(1, len(groups) + 1):
            choice = (best[k - 1][0], best[k - 1][1], k - 1, None)
            for i, span in windows.get(k - 1, ()):
                covered, count = best[i][0] + counts[k] - counts[i], best[i][1] - 1
                if (covered, count) > choice[:2]:
                    choice = (covered, count, i, span)
            best.append(choice)
        k = len(groups)
        while k > 0:
            _, _, previous, span = best[k]
            if span is not None:
                if k == len(groups) and (ext := _PHONE_EXT.match(text, span[1])):
                    span = (span[0], ext.end())
                spans.append(span)
            k = previous
    return spans


def _mask(text: str, spans: list[Span]) -> str:
    for a, b in spans:
        text = text[:a] + _MASK * (b - a) + text[b:]
    return text


@dataclass(frozen=True)
class PiiPolicy:
    """What the domain pack asks for: the built-in kinds on, and its own patterns (run first)."""

    kinds: frozenset[str]
    patterns: tuple[tuple[str, re.Pattern, object], ...]  # (kind, regex, validator or None)

    @property
    def placeholders(self) -> dict[str, str]:
        own = {kind: f"<{kind.upper()}>" for kind, _, _ in self.patterns}
        return {**{k: v for k, v in PLACEHOLDERS.items() if k in self.kinds}, **own}


@lru_cache(maxsize=16)
def _policy_of(fingerprint: str, pack: DomainPack) -> PiiPolicy:
    kinds = frozenset(k for k in PII_KINDS if pack.spec.pii.kinds.get(k, True))
    patterns = tuple((p.name.lower(), re.compile(p.regex),
                      pii_validator(p.validator) if p.validator else None) for p in pack.spec.pii.patterns)
    return PiiPolicy(kinds, patterns)


_policy_in_use: list[str] = [""]  # the fingerprint the redaction cache was filled under


def current_policy() -> PiiPolicy:
    pack = current_pack()
    if _policy_in_use[0] != pack.fingerprint:  # another pack: what was remembered no longer holds
        with _redacted_texts_lock:
            _redacted_texts.clear()
        _policy_in_use[0] = pack.fingerprint
    return _policy_of(pack.fingerprint, pack)


def active_placeholders(pack: DomainPack | None = None) -> list[str]:
    """The placeholders redacted texts may carry under `pack` (the current one by default)."""
    policy = current_policy() if pack is None else _policy_of(pack.fingerprint, pack)
    return list(policy.placeholders.values())


def _find_own(text: str, regex: re.Pattern, validator) -> list[Span]:
    spans = []
    for m in regex.finditer(text):
        if m.end() > m.start() and _MASK not in m.group() and (validator is None or validator(m.group())):
            spans.append((m.start(), m.end()))
    return spans


def pii_spans(text: str, policy: PiiPolicy | None = None) -> list[tuple[int, int, str]]:
    """`(start, end, kind)` of every PII value in `text`, in text order, never overlapping: the
    pack's own patterns first, then the built-in kinds the pack keeps on."""
    policy = policy or current_policy()
    found: list[tuple[int, int, str]] = []
    masked = text

    def take(kind: str, spans: list[Span]) -> None:
        nonlocal masked
        if spans:
            found.extend((a, b, kind) for a, b in spans)
            masked = _mask(masked, spans)

    for kind, regex, validator in policy.patterns:
        take(kind, _find_own(masked, regex, validator))
    on = policy.kinds
    if "@" in text and "email" in on:
        take("email", _find_emails(masked))
    if "iban" in on:
        take("iban", _find_ibans(masked))
    if _SIX_DIGITS.search(masked):  # cards and phones have more digits than that
        if "card" in on:
            take("card", _find_cards(masked))
        masked = _mask(masked, _find_lookalikes(masked))  # masked, not redacted
        if ("+" in masked or "00" in masked) and "phone" in on:
            take("phone", _find_phones(masked, international=True))
    if "national_id" in on:
        take("national_id", _find_national_ids(masked))
    if _SIX_DIGITS.search(masked) and "phone" in on:
        take("phone", _find_phones(masked, international=False))
    return sorted(found)


def redact(text: str) -> Redacted:
    """Replace every PII value in `text` with its typed placeholder. Idempotent."""
    if not text:
        return Redacted(text or "", {})
    policy = current_policy()
    spans = pii_spans(text, policy)
    if not spans:
        return Redacted(text, {})
    placeholders = policy.placeholders
    out, pos = [], 0
    for start, end, kind in spans:
        out += [text[pos:start], placeholders[kind]]
        pos = end
    out.append(text[pos:])
    return Redacted("".join(out), dict(Counter(kind for _, _, kind in spans)))


REDACTION_CACHE_SIZE = 8192
_redacted_texts: OrderedDict[str, str] = OrderedDict()  # text -> its redaction, least recently used first
_redacted_texts_lock = threading.Lock()


def _remember(text: str, clean: str) -> None:
    with _redacted_texts_lock:
        # `redact` is idempotent, so a redacted text is its own redaction: the prompt builder's guard
        # (`redact_cached` on text that was already redacted) is then a lookup, not a second scan.
        _redacted_texts[text] = clean
        _redacted_texts[clean] = clean
        while len(_redacted_texts) > REDACTION_CACHE_SIZE:
            _redacted_texts.popitem(last=False)


def redact_cached(text: str) -> str:
    """`redact(text).text`, memoised (least recently used out): KB documents repeat across thousands
    of prompts, and case texts redacted by `redact_remembered` come back here as prompts are built."""
    current_policy()  # forgets what another pack's policy redacted
    with _redacted_texts_lock:
        clean = _redacted_texts.get(text)
        if clean is not None:
            _redacted_texts.move_to_end(text)
            return clean
    clean = redact(text).text
    _remember(text, clean)
    return clean


def redact_remembered(text: str) -> Redacted:
    """`redact(text)` with the counts per kind, its result remembered for `redact_cached`."""
    redacted = redact(text)
    _remember(text, redacted.text)
    return redacted


def find_pii(text: str) -> list[str]:
    """The kinds of PII present in `text`, one entry per value found (empty when clean)."""
    counts = redact(text).counts_by_kind
    return [kind for kind in sorted(counts, key=_kind_order) for _ in range(counts[kind])]


def _kind_order(kind: str) -> tuple[int, str]:
    return (PII_KINDS.index(kind), kind) if kind in PII_KINDS else (len(PII_KINDS), kind)
