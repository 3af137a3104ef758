"""An independent PII benchmark corpus: planted values with their exact spans, and PII-free look-alikes.

Written apart from `llm_assets/sample_data/` on purpose (other phrasings, other formats, its own
generators: Luhn, IBAN mod-97, NIR, CPF and DNI/NIE check digits are computed here; only the
Verhoeff, ISO 7064 mod 11,10 and codice fiscale check characters come from python-stdnum), so
the redactor is measured on text it was not shaped by. Two parts, both seeded:

- `pii_sentences()`: operational sentences (chargebacks, payouts, KYC, partner tickets, JSON and
  key=value fragments) each planting one or two PII values among look-alikes. Every value records
  its kind, its format class (`phone/US/parens+ext`, `card/amex/spaces`, `iban/FR/print-lower`, ...)
  and its span, so a benchmark can tell which characters of which value survived.
- `clean_sentences()`: sentences with no PII but full of what a careless redactor would eat:
  amounts in several locales, order/batch/reference ids, timestamps, dates, versions, IP
  addresses, UUIDs, EAN codes, epoch times, BICs, durations, bare ids after "PO", "claim", ...

`score()` rates any redactor (text in, text with placeholders out) on both parts.

Kinds: `email`, `card`, `phone`, `iban`, `national_id` (the redactor's kinds). Format classes are
visited round-robin so each one gets samples; countries and values are drawn from the seed.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from string import Formatter

from stdnum import verhoeff
from stdnum.iso7064 import mod_11_10
from stdnum.it import codicefiscale

KINDS = ("email", "card", "phone", "iban", "national_id")
# Planted values per kind in the default corpus (2,700 values).
DEFAULT_VALUES = {"phone": 900, "card": 500, "iban": 500, "email": 300, "national_id": 500}


@dataclass(frozen=True)
class Planted:
    """One PII value planted in a sentence: `text[start:end] == value`."""

    kind: str
    fmt: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class PiiSentence:
    text: str
    planted: tuple[Planted, ...]


@dataclass(frozen=True)
class _Value:
    kind: str
    fmt: str
    value: str
    label: str = ""  # what a writer would put in front ("SSN", "Steuer-ID"), national ids only
    needs_label: bool = False  # a bare digit run that nobody writes without saying what it is


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


# --- phones -------------------------------------------------------------------------------------

_US_AREAS = ["212", "415", "312", "617", "202", "305", "713", "206", "303", "404", "646", "718", "512", "702"]
_CA_AREAS = ["416", "604", "514", "403", "613", "905"]
_US_EXTS = [" x123", " ext. 45", " ext 4567", " extension 12", " x9", ", ext. 301", " Ext. 7", " x 12", " #12", "x204"]


def _nanp(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice(_US_AREAS + _CA_AREAS)
    if rng.random() < 0.3:  # the 555-01xx range reserved for fiction, as test writers use it
        return area, "555", f"01{rng.randint(0, 99):02d}"
    exchange = rng.choice([e for e in range(201, 1000) if e % 100 != 11])
    return area, str(exchange), _digits(rng, 4)


def _us(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        a, e, s = _nanp(rng)
        base = {
            "parens": f"({a}) {e}-{s}", "parens-tight": f"({a}){e}-{s}", "dashes": f"{a}-{e}-{s}",
            "dots": f"{a}.{e}.{s}", "spaces": f"{a} {e} {s}", "bare": f"{a}{e}{s}",
            "1-dashes": f"1-{a}-{e}-{s}", "1-parens": f"1 ({a}) {e}-{s}", "intl": f"+1 {a} {e} {s}",
            "intl-dashes": f"+1-{a}-{e}-{s}", "intl-parens": f"+1 ({a}) {e}-{s}", "1-dots": f"1.{a}.{e}.{s}",
            "intl-dots": f"+1.{a}.{e}.{s}", "parens-dash": f"({a})-{e}-{s}",
        }[style.split("+")[0]]
        return base + (rng.choice(_US_EXTS) if style.endswith("+ext") else "")
    return make


def _uk(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        london = f"7{_digits(rng, 3)} {_digits(rng, 4)}" if rng.random() < 0.6 else f"7946 0{_digits(rng, 3)}"
        mobile = (f"7700 900{_digits(rng, 3)}" if rng.random() < 0.4
                  else f"7{rng.choice('45789')}{_digits(rng, 2)} {_digits(rng, 6)}")
        city = f"1{rng.choice(['61', '13', '21', '31', '41'])} 496 {_digits(rng, 4)}"  # 0161, 0113, ...
        return {
            "london": f"020 {london}", "london-parens": f"(020) {london}", "mobile": f"0{mobile}",
            "mobile-bare": "0" + mobile.replace(" ", ""), "city": f"0{city}",
            "intl": f"+44 20 {london}", "intl-0": f"+44 (0)20 {london}",
            "intl-mobile-bare": "+44" + mobile.replace(" ", ""),
            "00": f"0044 20 {london}", "mobile-dashes": "0" + mobile.replace(" ", "-"),
            "drama-city": f"01632 960{_digits(rng, 3)}", "freephone": f"0800 {_digits(rng, 3)} {_digits(rng, 4)}",
            "london-dashes": "020-" + london.replace(" ", "-"), "intl-0-mobile": f"+44(0){mobile}",
        }[style]
    return make


def _de(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        area = rng.choice(["30", "40", "89", "221", "69", "711", "351", "6221"])
        sub = _digits(rng, 10 - len(area)) if rng.random() < 0.5 else _digits(rng, 9 - len(area))
        sub = str(rng.randint(2, 9)) + sub[1:]
        mob = rng.choice(["151", "160", "170", "171", "176", "1512"])
        mob_sub = _digits(rng, 8 if len(mob) == 3 else 7)
        return {
            "spaces": f"0{area} {sub}", "parens": f"(0{area}) {sub}", "slash": f"0{area}/{sub}",
            "dash-ext": f"0{area} {sub[:-2]}-{sub[-2:]}", "mobile": f"0{mob} {mob_sub}",
            "bare": f"0{area}{sub}", "intl": f"+49 {area} {sub}", "intl-0": f"+49 (0){area} {sub}",
            "00": f"0049 {area} {sub}", "intl-mobile-dashes": f"+49-{mob}-{mob_sub}",
            "spaced-pairs": f"0{area} " + " ".join(sub[i:i + 2] for i in range(0, len(sub), 2)),
            "mobile-dash": f"0{mob}-{mob_sub}", "spaced-dash": f"0{area} - {sub}", "00-0": f"0049 (0){area} {sub}",
        }[style]
    return make


def _fr(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        pairs = [rng.choice("1234567"), *(f"{rng.randint(0, 99):02d}" for _ in range(4))]
        first = pairs[0]
        rest = pairs[1:]
        return {
            "spaces": f"0{first} " + " ".join(rest), "dots": f"0{first}." + ".".join(rest),
            "dashes": f"0{first}-" + "-".join(rest), "bare": f"0{first}" + "".join(rest),
            "nbsp": f"0{first}\u00a0" + "\u00a0".join(rest), "intl": f"+33 {first} " + " ".join(rest),
            "intl-0": f"+33 (0){first} " + " ".join(rest), "intl-bare": f"+33{first}" + "".join(rest),
            "00": f"0033 {first} " + " ".join(rest),
        }[style]
    return make


def _in(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        mob = rng.choice("6789") + _digits(rng, 9)
        land_area, land = rng.choice([("22", 8), ("11", 8), ("80", 8), ("33", 8), ("40", 8), ("44", 8)])
        land_sub = str(rng.randint(2, 6)) + _digits(rng, land - 1)
        return {
            "mobile-5-5": f"{mob[:5]} {mob[5:]}", "mobile-bare": mob, "mobile-0": f"0{mob[:5]} {mob[5:]}",
            "mobile-dashes": f"{mob[:5]}-{mob[5:]}", "intl": f"+91 {mob[:5]} {mob[5:]}",
            "intl-dashes": f"+91-{mob}", "landline": f"0{land_area} {land_sub[:4]} {land_sub[4:]}",
            "landline-parens": f"(0{land_area}) {land_sub}",
            "landline-dashes": f"0{land_area}-{land_sub[:4]}-{land_sub[4:]}",
            "intl-bare": f"+91{mob}", "landline-dash": f"0{land_area}-{land_sub}",
            "intl-landline": f"+91 {land_area} {land_sub[:4]} {land_sub[4:]}",
        }[style]
    return make


def _br(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        ddd = rng.choice(["11", "21", "31", "41", "51", "61", "71", "81", "85", "48"])
        mobile = f"9{rng.randint(6, 9)}{_digits(rng, 3)}-{_digits(rng, 4)}"
        fixed = f"{rng.randint(2, 5)}{_digits(rng, 3)}-{_digits(rng, 4)}"
        return {
            "mobile-parens": f"({ddd}) {mobile}", "fixed-parens": f"({ddd}) {fixed}",
            "mobile-spaces": f"{ddd} {mobile}",
            "intl": f"+55 {ddd} {mobile}", "intl-parens": f"+55 ({ddd}) {mobile}", "trunk": f"(0{ddd}) {mobile}",
            "bare": ddd + mobile.replace("-", ""), "mobile-9-split": f"({ddd}) {mobile[0]} {mobile[1:]}",
            "parens-tight": f"({ddd}){mobile}", "trunk-spaces": f"0{ddd} {mobile.replace('-', ' ')}",
            "intl-fixed": f"+55 {ddd} {fixed.replace('-', ' ')}",
        }[style]
    return make


def _other_intl(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        return {
            "ES": f"+34 6{_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}",
            "IT": f"+39 06 {_digits(rng, 4)} {_digits(rng, 4)}", "NL": f"+31 6 {_digits(rng, 8)}",
            "AU": f"+61 2 9{_digits(rng, 3)} {_digits(rng, 4)}",
            "CH": f"+41 44 {rng.randint(200, 999)} {_digits(rng, 2)} {_digits(rng, 2)}",
            "JP": f"+81 3-{_digits(rng, 4)}-{_digits(rng, 4)}",
            "IE": f"+353 1 {rng.randint(200, 999)} {_digits(rng, 4)}",
        }[style]
    return make


PHONE_FORMATS: list[tuple[str, Callable[[random.Random], str]]] = [
    *((f"phone/US/{s}", _us(s)) for s in ["parens", "parens-tight", "dashes", "dots", "spaces", "bare", "1-dashes",
                                          "1-parens", "intl", "intl-dashes", "intl-parens", "parens+ext", "dashes+ext",
                                          "dots+ext", "intl+ext", "1-dots", "intl-dots", "parens-dash"]),
    *((f"phone/UK/{s}", _uk(s)) for s in ["london", "london-parens", "mobile", "mobile-bare", "city", "intl", "intl-0",
                                          "intl-mobile-bare", "00", "mobile-dashes", "drama-city", "freephone",
                                          "london-dashes", "intl-0-mobile"]),
    *((f"phone/DE/{s}", _de(s)) for s in ["spaces", "parens", "slash", "dash-ext", "mobile", "bare", "intl", "intl-0",
                                          "00", "intl-mobile-dashes", "spaced-pairs", "mobile-dash", "spaced-dash",
                                          "00-0"]),
    *((f"phone/FR/{s}", _fr(s)) for s in ["spaces", "dots", "dashes", "bare", "nbsp", "intl", "intl-0", "intl-bare",
                                          "00"]),
    *((f"phone/IN/{s}", _in(s)) for s in ["mobile-5-5", "mobile-bare", "mobile-0", "mobile-dashes", "intl",
                                          "intl-dashes", "landline", "landline-parens", "landline-dashes",
                                          "intl-bare", "landline-dash", "intl-landline"]),
    *((f"phone/BR/{s}", _br(s)) for s in ["mobile-parens", "fixed-parens", "mobile-spaces", "intl", "intl-parens",
                                          "trunk", "bare", "mobile-9-split", "parens-tight", "trunk-spaces",
                                          "intl-fixed"]),
    *((f"phone/{c}/intl", _other_intl(c)) for c in ["ES", "IT", "NL", "AU", "CH", "JP", "IE"]),
]


# --- cards --------------------------------------------------------------------------------------

def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)  # doubled once the check digit is appended
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


_BRANDS: dict[str, tuple[Callable[[random.Random], str], list[int]]] = {
    "visa": (lambda r: "4", [16, 13, 19]),
    "mastercard": (lambda r: str(r.randint(51, 55)), [16]),
    "mastercard-2series": (lambda r: str(r.randint(2221, 2720)), [16]),
    "amex": (lambda r: r.choice(["34", "37"]), [15]),
    "discover": (lambda r: r.choice(["6011", "65", str(r.randint(644, 649))]), [16, 19]),
    "jcb": (lambda r: str(r.randint(3528, 3589)), [16]),
    "diners": (lambda r: r.choice(["36", "38", str(r.randint(300, 305))]), [14]),
    "unionpay": (lambda r: "62" + str(r.randint(1, 9)), [16, 17, 18, 19]),
    "maestro": (lambda r: r.choice(["5018", "5020", "5038", "5893", "6304", "6759", "6761", "6763"]), [16, 19, 13]),
}


def _group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        if digits[i:i + size]:
            out.append(digits[i:i + size])
        i += size
    if i < len(digits):
        out.append(digits[i:])
    return sep.join(out)


def _card(brand: str, spacing: str) -> Callable[[random.Random], str]:
    prefix, lengths = _BRANDS[brand]

    def make(rng: random.Random) -> str:
        n = rng.choice(lengths)
        digits = _luhn_complete(prefix(rng), n, rng)
        if spacing == "plain":
            return digits
        sizes = {15: [4, 6, 5], 14: [4, 6, 4]}.get(n, [4, 4, 4, 4, 4])
        return _group(digits, sizes, {"spaces": " ", "dashes": "-", "dots": ".", "nbsp": "\u00a0"}[spacing])
    return make


CARD_FORMATS = [(f"card/{b}/{s}", _card(b, s)) for b in _BRANDS
                for s in (["spaces", "dashes", "plain"] + (["dots", "nbsp"] if b in ("visa", "mastercard") else []))]


# --- IBANs (the SEPA countries; BBAN structures from the ISO 13616 registry) -------------------

SEPA_BBAN = {
    "AD": "4n4n12c", "AT": "5n11n", "BE": "3n7n2n", "BG": "4a4n2n8c", "CH": "5n12c", "CY": "3n5n16c",
    "CZ": "4n6n10n", "DE": "8n10n", "DK": "4n9n1n", "EE": "2n2n11n1n", "ES": "4n4n1n1n10n", "FI": "3n11n",
    "FR": "5n5n11c2n", "GB": "4a6n8n", "GI": "4a15c", "GR": "3n4n16c", "HR": "7n10n", "HU": "3n4n1n15n1n",
    "IE": "4a6n8n", "IS": "4n2n6n10n", "IT": "1a5n5n12c", "LI": "5n12c", "LT": "5n11n", "LU": "3n13c",
    "LV": "4a13c", "MC": "5n5n11c2n", "MT": "4a5n18c", "NL": "4a10n", "NO": "4n6n1n", "PL": "8n16n",
    "PT": "4n4n11n2n", "RO": "4a16c", "SE": "3n16n1n", "SI": "5n8n2n", "SK": "4n6n10n", "SM": "1a5n5n12c",
    "VA": "3n15n", "AL": "8n16c", "MD": "2c18c", "ME": "3n13n2n", "MK": "3n10c2n", "RS": "3n13n2n",
}


def _bban(structure: str, rng: random.Random) -> str:
    out, num = [], ""
    for ch in structure:
        if ch.isdigit():
            num += ch
            continue
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}[ch]
        out.append("".join(rng.choice(pool) for _ in range(int(num))))
        num = ""
    return "".join(out)


def _iban_value(country: str, rng: random.Random) -> str:
    bban = _bban(SEPA_BBAN[country], rng)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


_IBAN_STYLES = ["print", "electronic", "print", "electronic", "print-lower", "electronic-lower", "print-nbsp"]


def iban_format(country: str) -> Callable[[random.Random], tuple[str, str]]:
    def make(rng: random.Random) -> tuple[str, str]:
        value = _iban_value(country, rng)
        style = rng.choice(_IBAN_STYLES)
        if style.startswith("print"):
            value = ("\u00a0" if style.endswith("nbsp") else " ").join(value[i:i + 4] for i in range(0, len(value), 4))
        return style, value.lower() if style.endswith("lower") else value
    return make


# --- emails -------------------------------------------------------------------------------------

_FIRST = ["anna", "li", "omar", "sofia", "jean-luc", "maria", "kenji", "fatima", "olu", "priya", "lucas", "zoe"]
_LAST = ["schmidt", "wei", "haddad", "rossi", "dupont", "silva", "tanaka", "khan", "adeyemi", "sharma", "o_brien",
         "novak"]
_DOMAINS = ["example.com", "mail.example.org", "eu.corp.example.net", "example.co.uk", "payments-example.de",
            "sub.mail.example.com.br", "example.in", "EXAMPLE.FR"]


def _email(style: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        first, last, domain = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_DOMAINS)
        return {
            "dotted": f"{first}.{last}@{domain}", "plus": f"{first}+{rng.choice(['billing', 'kyc', 'x7'])}@{domain}",
            "capitals": f"{first.title()}.{last.upper()}@{domain.upper()}",
            "digits": f"{first}{rng.randint(1, 9999)}@{domain}",
            "subdomain": f"{last}@ops.{rng.choice(['eu', 'us', 'apac'])}.{domain}",
            "underscore": f"{first}_{last}@{domain}",
            "short": f"{first[0]}{last}@{domain}", "plus-capitals": f"{first.title()}+Refunds@{domain.title()}",
        }[style]
    return make


EMAIL_FORMATS = [(f"email/{s}", _email(s)) for s in
                 ["dotted", "plus", "capitals", "digits", "subdomain", "underscore", "short", "plus-capitals"]]


# --- national ids -------------------------------------------------------------------------------

_NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
_NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"


def _nir(rng: random.Random) -> str:
    body = (f"{rng.choice('12')}{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}"
            f"{rng.choice([d for d in range(1, 96) if d != 20]):02d}{rng.randint(1, 990):03d}{rng.randint(1, 999):03d}")
    return body + f"{97 - int(body) % 97:02d}"


def _idnr(rng: random.Random) -> str:
    digits = rng.sample("0123456789", 9)
    while digits[0] == "0":
        rng.shuffle(digits)
    digits.insert(rng.randint(1, 9), rng.choice(digits))  # exactly one digit twice
    body = "".join(digits)
    return body + mod_11_10.calc_check_digit(body)


def _aadhaar(rng: random.Random) -> str:
    body = str(rng.randint(2, 9)) + _digits(rng, 10)
    return body + verhoeff.calc_check_digit(body)


def _cpf(rng: random.Random) -> str:
    body = [int(c) for c in _digits(rng, 9)]
    for weight_start in (10, 11):
        total = sum(d * w for d, w in zip(body, range(weight_start, 1, -1)))
        body.append(0 if total % 11 < 2 else 11 - total % 11)
    return "".join(map(str, body))


def _dni(rng: random.Random) -> str:
    n = rng.randint(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def _nie(rng: random.Random) -> str:
    lead, n = rng.choice("XYZ"), rng.randint(0, 9_999_999)
    return f"{lead}{n:07d}{'TRWAGMYFPDXBNJZSQVHLCKE'[int(str('XYZ'.index(lead)) + f'{n:07d}') % 23]}"


def _codice_fiscale(rng: random.Random) -> str:
    letters = "".join(rng.choice("BCDFGHLMNPRSTVZ") for _ in range(6))
    day = rng.randint(1, 28) + (40 if rng.random() < 0.5 else 0)
    body = (f"{letters}{rng.randint(40, 99):02d}{rng.choice('ABCDEHLMPRST')}{day:02d}"
            f"{rng.choice('ADFHLMZ')}{rng.randint(1, 999):03d}")
    return body + codicefiscale.calc_check_digit(body)


def _nid(fmt: str, label: str, make: Callable[[random.Random], str], needs_label: bool = False):
    def gen(rng: random.Random) -> _Value:
        return _Value("national_id", f"national_id/{fmt}", make(rng), label, needs_label)
    return gen


NATIONAL_ID_FORMATS = [
    _nid("US-SSN/dashes", "SSN", lambda r: (lambda s: f"{s[:3]}-{s[3:5]}-{s[5:]}")(_ssn(r))),
    _nid("US-SSN/spaces", "social security number", lambda r: (lambda s: f"{s[:3]} {s[3:5]} {s[5:]}")(_ssn(r))),
    _nid("US-SSN/bare", "SSN", _ssn, needs_label=True),
    _nid("US-ITIN/dashes", "ITIN", lambda r: f"9{r.randint(0, 99):02d}-{r.randint(70, 88)}-{r.randint(1, 9999):04d}"),
    _nid("UK-NINO/spaced", "NI number", lambda r: f"{r.choice(_NINO_FIRST)}{r.choice(_NINO_SECOND)} {_digits(r, 2)} "
                                                  f"{_digits(r, 2)} {_digits(r, 2)} {r.choice('ABCD')}"),
    _nid("UK-NINO/compact", "NINO",
         lambda r: f"{r.choice(_NINO_FIRST)}{r.choice(_NINO_SECOND)}{_digits(r, 6)}{r.choice('ABCD')}"),
    _nid("UK-NINO/example-prefix", "NI No",
         lambda r: f"QQ {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)} {r.choice('ABCD')}"),
    _nid("UK-NINO/lower", "national insurance no.", lambda r: f"{r.choice(_NINO_FIRST)}{r.choice(_NINO_SECOND)}"
                                                              f"{_digits(r, 6)}{r.choice('ABCD')}".lower()),
    _nid("FR-NIR/spaced", "numéro de sécurité sociale",
         lambda r: (lambda s: f"{s[0]} {s[1:3]} {s[3:5]} {s[5:7]} {s[7:10]} {s[10:13]} {s[13:]}")(_nir(r))),
    _nid("FR-NIR/bare", "INSEE", _nir, needs_label=True),
    _nid("DE-IdNr/spaced", "Steuer-ID", lambda r: (lambda s: f"{s[:2]} {s[2:5]} {s[5:8]} {s[8:]}")(_idnr(r))),
    _nid("DE-IdNr/bare", "Steuer-IdNr.", _idnr, needs_label=True),
    _nid("IN-Aadhaar/spaced", "Aadhaar", lambda r: (lambda s: f"{s[:4]} {s[4:8]} {s[8:]}")(_aadhaar(r))),
    _nid("IN-Aadhaar/bare", "Aadhaar no.", _aadhaar, needs_label=True),
    _nid("BR-CPF/formatted", "CPF", lambda r: (lambda s: f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}")(_cpf(r))),
    _nid("BR-CPF/bare", "CPF", _cpf, needs_label=True),
    _nid("ES-DNI", "DNI", _dni),
    _nid("ES-DNI/dash", "DNI", lambda r: (lambda s: f"{s[:8]}-{s[8]}")(_dni(r))),
    _nid("ES-NIE", "NIE", _nie),
    _nid("IT-codice-fiscale", "codice fiscale", _codice_fiscale),
]


# --- look-alikes (shared by both halves) --------------------------------------------------------

def _amount(rng: random.Random) -> str:
    n = rng.randint(1, 999_999) / 100 * rng.choice([1, 1, 10, 100])
    us = f"{n:,.2f}"  # 1,234.56
    eu = us.replace(",", "_").replace(".", ",").replace("_", ".")  # 1.234,56
    fr = eu.replace(".", " ")  # 1 234,56
    return rng.choice([f"{us} EUR", f"{n:.2f}", f"EUR {us}", f"{eu} €", f"${us}", f"USD {n:.2f}", f"GBP {us}",
                       f"{fr} EUR", f"R$ {eu}", f"-{n:.2f}", f"{int(n)} EUR", f"INR {us}"])


def _date(rng: random.Random) -> str:
    y, m, d = rng.choice([2025, 2026, 2027]), rng.randint(1, 12), rng.randint(1, 28)
    month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m - 1]
    return rng.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m:02d}/{d:02d}/{y}", f"{d:02d}.{m:02d}.{y}",
                       f"{month} {d}, {y}", f"{d} {month} {y}", f"{y}{m:02d}{d:02d}"])


def _timestamp(rng: random.Random) -> str:
    y, m, d = rng.choice([2025, 2026]), rng.randint(1, 12), rng.randint(1, 28)
    hh, mm, ss = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice([
        f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z", f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}",
        f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{rng.randint(0, 999999):06d}+01:00",
        f"{d:02d}/{m:02d}/{y} {hh:02d}:{mm:02d}", f"{hh:02d}:{mm:02d}:{ss:02d}", f"{hh:02d}:{mm:02d} UTC",
        str(rng.randint(1_700_000_000, 1_800_000_000)), str(rng.randint(1_700_000_000_000, 1_800_000_000_000)),
        f"Mon, {d:02d} Nov {y} {hh:02d}:{mm:02d}:{ss:02d} +0100", f"{m:02d}/{d:02d}/{y % 100:02d}",
        f"{d:02d}.{m:02d}.{y % 100:02d}",
        f"{y}{m:02d}{d:02d}{hh:02d}{mm:02d}{ss:02d}",
    ])


def _partner(rng: random.Random) -> str:
    return rng.choice([f"P-{rng.randint(1, 999):03d}", f"PARTNER-{rng.randint(1, 9999):04d}",
                       f"P{rng.randint(1, 99):03d}"])


def _entity(rng: random.Random) -> str:
    return rng.choice([f"ENT-{rng.randint(1, 99999):05d}", f"entity {rng.randint(1000, 99999)}",
                       f"M-{rng.randint(1000, 9999)}"])


def _reference(rng: random.Random) -> str:
    y = rng.choice([2025, 2026])
    return rng.choice([
        f"REF-{y}-{rng.randint(1, 999999):06d}", f"INV/{y}/{rng.randint(1, 9999):04d}",
        f"ORD-{y}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}-{rng.randint(1, 999999):06d}",
        f"B-{y}1118-{rng.randint(1, 9999):04d}", f"TKT-{rng.randint(10000, 99999)}",
        f"case #{rng.randint(10000, 999999)}",
        f"CHG-{y}-11-{rng.randint(1, 9999):04d}", f"SEPA-{y}-{rng.randint(1, 99999999):08d}",
        f"E2E-{rng.randint(10**9, 10**10 - 1)}", f"{y}/11/18-{rng.randint(1, 9999):04d}",
        f"order no. {rng.randint(10**9, 10**10 - 1)}", f"invoice {y}{rng.randint(1, 999999):06d}",
        f"batch {y}1118{rng.randint(1, 99999):05d}", f"run id {rng.randint(10**12, 10**13 - 1)}",
        f"ticket {rng.randint(10000, 99999)}", f"SKU 400{rng.randint(10**9, 10**10 - 1)}",
        f"tracking 1Z{rng.randint(100, 999)}AA1{rng.randint(10**9, 10**10 - 1)}",
        f"MCC {rng.choice(['5411', '5999', '4829', '7995'])}",
        f"BIC {rng.choice(['DEUTDEFF', 'COBADEFFXXX', 'BNPAFRPP', 'NWBKGB2L', 'ABNANL2A', 'DEUTDEFF500'])}",
        f"PO {rng.randint(10**9, 10**10 - 1)}", f"claim 0{rng.randint(10**8, 10**9 - 1)}",
        f"policy {rng.randint(10**9, 10**10 - 1)}",
        f"routing 0{rng.randint(10**7, 10**8 - 1)}",
        f"sort code {rng.randint(10, 99)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}",
        f"ISBN 978-3-{rng.randint(10, 99)}-{rng.randint(100000, 999999)}-{rng.randint(0, 9)}",
        f"offset {rng.randint(10**9, 10**10 - 1)}", f"msg {rng.randint(10**18, 10**19 - 1)}",
        f"PR #{rng.randint(100, 9999)}", f"commit {'%010x' % rng.getrandbits(40)}",
        f"employee E-{rng.randint(10000, 99999)}",
        f"UETR {'%08x' % rng.getrandbits(32)}-{'%04x' % rng.getrandbits(16)}-4{'%03x' % rng.getrandbits(12)}-"
        f"a{'%03x' % rng.getrandbits(12)}-{'%012x' % rng.getrandbits(48)}",
    ])


def _version(rng: random.Random) -> str:
    return rng.choice([
        f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 20)}",
        f"{rng.randint(4, 6)}.{rng.randint(0, 18)}.0-{rng.randint(100, 999)}.el9",
        f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}:{rng.choice([8080, 443, 9092, 19530])}",
        f"build {rng.choice([2025, 2026])}.11.18.{rng.randint(1, 30)}", f"schema v{rng.randint(1, 40)}",
        f"v{rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}-rc.{rng.randint(1, 5)}", "2001:db8::1",
        f"lat {rng.randint(-89, 89)}.{rng.randint(1000, 9999)}, lon {rng.randint(-179, 179)}.{rng.randint(1000, 9999)}",
    ])


def _metric(rng: random.Random) -> str:
    return rng.choice([
        f"{rng.randint(1, 99)}.{rng.randint(0, 9)}%", f"p95 {rng.randint(100, 9999)} ms", f"{rng.randint(2, 500)} rows",
        f"{rng.randint(1, 60)} min", f"chargeback_ratio 0.0{rng.randint(100, 999)}",
        f"velocity_1h {rng.randint(1, 9)}.{rng.randint(0, 9)}",
        f"HTTP {rng.choice([400, 404, 409, 429, 500, 502, 503])}", f"error E-{rng.randint(1000, 9999)}",
        f"retry {rng.randint(1, 5)} of 5", f"rows {rng.randint(1, 500)}-{rng.randint(501, 5000)}",
        f"line {rng.randint(2, 9999)}", f"{rng.randint(1, 9)} x {rng.randint(10, 999)} items", f"T+{rng.randint(1, 3)}",
        f"{rng.choice('+-')}{rng.randint(0, 99)}.{rng.randint(0, 99):02d}%",
        f"qty {rng.randint(1, 9)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
        f"score {rng.randint(0, 99)}.{rng.randint(0, 9)}",
        f"duration {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
    ])


_FILLERS: dict[str, Callable[[random.Random], str]] = {
    "amount": _amount, "date": _date, "ts": _timestamp, "partner": _partner, "entity": _entity,
    "ref": _reference, "version": _version, "metric": _metric,
}


# --- sentences ----------------------------------------------------------------------------------

_TEMPLATES: dict[str, list[str]] = {
    "phone": [
        "Cardholder asked for a callback on {phone} before {ts}; dispute {ref} stays open.",
        "Merchant support line {phone} did not answer; partner {partner} escalated ({metric}).",
        "Tel: {phone} / partner {partner} / {date}",
        "Contact at {partner}: J. Doe, {phone}, shift ends {ts}.",
        '{{"contact_phone": "{phone}", "amount": "{amount}", "ref": "{ref}"}}',
        "SMS one-time code to {phone} failed three times at {ts} ({metric}).",
        "Beneficiary mobile {phone} differs from the number on file for {entity}.",
        "Please ring {phone} about {ref} - payout of {amount} is on hold.",
        "Phone number on the chargeback form: {phone}.",
        "callback={phone}; priority=2; partner={partner}; seen={ts}",
        "Customer (ph. {phone}) disputes {amount} charged on {date}.",
        "{phone} called twice about {ref} after the {version} rollout.",
        "Store manager reachable at {phone} (mobile) until {ts}, batch {ref}.",
        "Fraud team: device changed, then a call from {phone} asking to raise the limit to {amount}.",
    ],
    "card": [
        "Chargeback filed on card {card} for {amount} on {date}, reason code 10.4.",
        "PAN {card} appears in the settlement file of {partner} twice ({ref}).",
        "Customer read the card number {card} aloud on a recorded call, ticket {ref}.",
        '{{"pan": "{card}", "amount": "{amount}", "mcc": "5411", "ts": "{ts}"}}',
        "Declined: card={card} amount={amount} partner={partner} at {ts}",
        "Card {card} was used in three countries within {metric}.",
        "The refund of {amount} went to {card} instead of the original card, see {ref}.",
        "{card} flagged by the velocity rule ({metric}) for {entity}.",
        "Authorization for {amount} on card ending in a full number {card} timed out ({version}).",
        "Merchant {entity} stored the card ({card}) in a free-text field on {date}.",
    ],
    "iban": [
        "SEPA credit transfer of {amount} to {iban} was returned (AC04) on {date}.",
        "Payout to IBAN {iban} bounced; partner {partner} confirmed the account is closed.",
        "Beneficiary account {iban} changed twice in {metric} for {entity}.",
        '{{"iban": "{iban}", "amount": "{amount}", "end_to_end_id": "{ref}"}}',
        "Refund {ref}: debtor IBAN {iban}, creditor {partner}, value date {date}.",
        "Mandate for {iban} revoked at {ts}; direct debit of {amount} rejected.",
        "iban={iban} amount={amount} status=RJCT ts={ts}",
        "The partner file row for {entity} carries {iban} in the name column ({version}).",
        "Customer asked to move the balance of {amount} to {iban}.",
        "Duplicate payouts to {iban} on {date}, both with {ref}.",
    ],
    "email": [
        "Customer {email} says the statement for {date} does not match ({amount}).",
        "Reply-To: {email} | Subject: dispute {ref}",
        "Partner {partner} ops contact {email} confirmed the fix in {version}.",
        '{{"customer_email": "{email}", "ref": "{ref}", "ts": "{ts}"}}',
        "Password reset requested for {email} from a new device at {ts}.",
        "Escalated by {email}: payout of {amount} missing since {date}.",
        "Send the corrected file to <{email}> before {ts}.",
        "email={email}; partner={partner}; {metric}",
        "Two accounts share the login {email} ({entity}).",
        "Notification to {email} bounced (mailbox full), ticket {ref}.",
    ],
    "national_id": [
        "KYC mismatch for {entity}: {label} {national_id} does not match the name on file.",
        "Synthetic identity suspected: {label} {national_id} used on {metric} since {date}.",
        "Onboarding form for {partner} lists {label}: {national_id} ({ts}).",
        '{{"document_type": "{label}", "document_number": "{national_id}", "ref": "{ref}"}}',
        "Customer uploaded a scan showing {label} {national_id}; review {ref} pending.",
        "The {label} field ({national_id}) was copied into the address line by {version}.",
        "Account holder {label} = {national_id}, payout {amount} on hold.",
    ],
}
# Strong formats also appear without a label in front.
_UNLABELED_ID_TEMPLATES = [
    "ID document number {national_id} belongs to another customer ({entity}).",
    "Identity check failed for {national_id} at {ts}, ticket {ref}.",
    "{national_id} was typed in the reference field of a {amount} transfer.",
]
_PAIR_TEMPLATES = [
    "Caller {phone} gave the email {email} and disputes {amount} ({ref}).",
    "Card {card} and IBAN {iban} both belong to {entity}, flagged on {date}.",
    "Contact {email} / {phone}, partner {partner}, seen {ts}.",
    "Refund of {amount} requested to {iban}; customer email {email}.",
    "Same {label} {national_id} behind card {card} and two other cards ({metric}).",
    "{phone} asked to cancel card {card} at {ts}.",
]

_CLEAN_TEMPLATES = [
    "Partner {partner} reports {amount} for {ref} but our ledger shows {amount}.",
    "Batch import from {partner} rejected {metric} on {date} at {ts}; merchant {entity}.",
    "Settlement {ref} for {amount}, fee {amount} per item, {metric}, {ref}.",
    "Entity {entity}, {metric}, {metric}, risk tier high since {date}.",
    "Ticket {ref} escalated to level 2 of 5 on {ts}; desk hours 9-17.",
    "Service upgraded to {version} at {ts}; {metric} afterwards.",
    "Host {version} answered {metric} during the {ts} window.",
    '{{"partner_id": "{partner}", "amount": "{amount}", "event_ts": "{ts}", "ref": "{ref}"}}',
    "partner={partner} entity={entity} amount={amount} ts={ts} ref={ref}",
    "Exchange rate {amount} applied to {ref} instead of {amount} ({date}).",
    "Duplicate event for {entity} at {ts} and {ts}, same {ref}.",
    "Reconciliation {date}: {amount} expected, {amount} booked, difference {amount}.",
    "The partner file {ref} has a shifted column after field {metric} ({version}).",
    "Payout {ref} of {amount} delayed to {date} because of {metric}.",
    "{ref} was routed to the wrong queue after the {version} deploy on {date}.",
    "Velocity rule fired for {entity}: {metric}, {metric}, threshold {amount}.",
    "Placeholders stay as they are: <CARD>, <EMAIL>, <PHONE>, <IBAN>, <NATIONAL_ID> ({ref}).",
    "Chargeback {ref} for {amount} won on {date}; {metric}.",
    "Cut-off moved from {ts} to {ts} for partner {partner}.",
    "Rule {version} suppressed {metric} for {entity} between {date} and {date}.",
    "Invoice {ref} lists {metric} at {amount} each, total {amount}.",
    "Kafka offset lag {metric} on partition 2, last commit {ts}, broker {version}.",
]


# How a value sits in running text besides plain: bracketed, quoted, listed, glued to a key.
_WRAPPERS = [("(", ")"), ("[", "]"), ('"', '"'), ("'", "'"), ("", "."), ("", ","), ("", ";"), ("", ":"),
             ("(", ")."), ("«", "»"), ("*", "*"), ("", " /"), ("", "!"), ("", "?")]


def _render(template: str, slots: dict[str, _Value], rng: random.Random) -> PiiSentence:
    text, planted = [], []
    pos = 0
    label = next((v.label for v in slots.values() if v.kind == "national_id"), "")
    for literal, field_name, _, _ in Formatter().parse(template):
        text.append(literal)
        pos += len(literal)
        if field_name is None:
            continue
        if field_name in slots:
            v = slots[field_name]
            before, after = rng.choice(_WRAPPERS) if rng.random() < 0.25 else ("", "")
            text.append(before)
            pos += len(before)
            planted.append(Planted(v.kind, v.fmt, v.value, pos, pos + len(v.value)))
            piece = v.value + after
        elif field_name == "label":
            piece = label
        else:
            piece = _FILLERS[field_name](rng)
        text.append(piece)
        pos += len(piece)
    return PiiSentence("".join(text), tuple(planted))


def _values(counts: dict[str, int], rng: random.Random) -> dict[str, list[_Value]]:
    out: dict[str, list[_Value]] = {}
    for kind, n in counts.items():
        values = []
        for i in range(n):
            if kind == "national_id":
                values.append(NATIONAL_ID_FORMATS[i % len(NATIONAL_ID_FORMATS)](rng))
            elif kind == "iban":
                country = list(SEPA_BBAN)[i % len(SEPA_BBAN)]
                style, value = iban_format(country)(rng)
                values.append(_Value(kind, f"iban/{country}/{style}", value))
            else:
                formats = {"phone": PHONE_FORMATS, "card": CARD_FORMATS, "email": EMAIL_FORMATS}[kind]
                fmt, make = formats[i % len(formats)]
                values.append(_Value(kind, fmt, make(rng)))
        rng.shuffle(values)
        out[kind] = values
    return out


def pii_sentences(counts: dict[str, int] | None = None, seed: int = 20261118) -> list[PiiSentence]:
    """Sentences planting `counts` values per kind (default `DEFAULT_VALUES`), ~1 in 6 with two values."""
    rng = random.Random(seed)
    pools = _values(counts or DEFAULT_VALUES, rng)
    sentences = []
    while any(pools.values()):
        kinds = [k for k in KINDS if pools[k]]
        pair = rng.random() < 0.17 and len(kinds) > 1
        if pair:
            template = rng.choice(_PAIR_TEMPLATES)
            needed = [f for _, f, _, _ in Formatter().parse(template) if f in KINDS]
            if all(pools[k] for k in needed):
                slots = {k: pools[k].pop() for k in needed}
                sentences.append(_render(template, slots, rng))
                continue
        kind = rng.choice(kinds)
        value = pools[kind].pop()
        templates = _TEMPLATES[kind]
        if kind == "national_id" and not value.needs_label and rng.random() < 0.3:
            templates = _UNLABELED_ID_TEMPLATES
        sentences.append(_render(rng.choice(templates), {kind: value}, rng))
    return sentences


def clean_sentences(n: int = 2000, seed: int = 20261119) -> list[str]:
    """`n` operational sentences with no PII and many look-alikes."""
    rng = random.Random(seed)
    return [_render(_CLEAN_TEMPLATES[i % len(_CLEAN_TEMPLATES)], {}, rng).text for i in range(n)]


# --- scoring ------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<(?:EMAIL|CARD|PHONE|IBAN|NATIONAL_ID)>")


def redacted_spans(original: str, redacted: str) -> list[tuple[int, int]] | None:
    """The spans of `original` that `redacted` replaced by placeholders (None if it changed anything else).

    Found by aligning: the redacted text's literal pieces must appear in order in the original and
    each placeholder stands for the non-empty text between them. A placeholder already present in
    the original and kept as it is is not a redaction.
    """
    pieces = _PLACEHOLDER.split(redacted)
    if len(pieces) == 1:
        return [] if redacted == original else None
    match = re.fullmatch("(.+?)".join(re.escape(p) for p in pieces), original, re.DOTALL)
    if match is None:
        return None
    return [match.span(i) for i in range(1, len(pieces))
            if not _PLACEHOLDER.fullmatch(original[match.start(i):match.end(i)])]


@dataclass
class Score:
    """Recall per kind and format class, precision over redactions, and what went wrong."""

    planted: Counter = field(default_factory=Counter)
    recalled: Counter = field(default_factory=Counter)
    planted_by_format: Counter = field(default_factory=Counter)
    recalled_by_format: Counter = field(default_factory=Counter)
    true_redactions: int = 0
    false_redactions: int = 0
    clean_changed: int = 0
    misaligned: int = 0
    leaks: list[tuple[str, str, str]] = field(default_factory=list)  # (format, value, redacted sentence)
    false_positives: list[tuple[str, str]] = field(default_factory=list)  # (redacted text, sentence)

    def recall(self, kind: str) -> float:
        return self.recalled[kind] / self.planted[kind] if self.planted[kind] else 1.0

    @property
    def precision(self) -> float:
        total = self.true_redactions + self.false_redactions
        return self.true_redactions / total if total else 1.0


def score(redact_text: Callable[[str], str], sentences: list[PiiSentence], clean: list[str]) -> Score:
    """Score a redactor (text in, text with placeholders out) on the corpus.

    A planted value is recalled when none of its letters and digits survive in clear (separators
    may); a redaction is true when it overlaps a planted value, false otherwise, and every
    redaction in a PII-free sentence is false.
    """
    s = Score()
    for sentence in sentences:
        redacted = redact_text(sentence.text)
        spans = redacted_spans(sentence.text, redacted)
        if spans is None:
            s.misaligned += 1
            spans = []
        for p in sentence.planted:
            s.planted[p.kind] += 1
            s.planted_by_format[p.fmt] += 1
            covered = all(any(a <= i < b for a, b in spans)
                          for i in range(p.start, p.end) if sentence.text[i].isalnum())
            if covered:
                s.recalled[p.kind] += 1
                s.recalled_by_format[p.fmt] += 1
            else:
                s.leaks.append((p.fmt, p.value, redacted))
        for a, b in spans:
            if any(a < p.end and p.start < b for p in sentence.planted):
                s.true_redactions += 1
            else:
                s.false_redactions += 1
                s.false_positives.append((sentence.text[a:b], sentence.text))
    for text in clean:
        redacted = redact_text(text)
        if redacted == text:
            continue
        s.clean_changed += 1
        spans = redacted_spans(text, redacted)
        if spans is None:
            s.misaligned += 1
            spans = [(0, len(text))]
        s.false_redactions += len(spans)
        s.false_positives += [(text[a:b], text) for a, b in spans]
    return s
