"""Seeded fake PII that looks real to a validator: Luhn-valid cards, checksummed IBANs,
international phones, emails and national ids. Used only to plant PII in sample data."""

from __future__ import annotations

import random
import string


def luhn_complete(prefix_digits: str, length: int, rng: random.Random) -> str:
    """A card number of `length` digits starting with `prefix_digits` whose Luhn check holds."""
    body = prefix_digits + "".join(rng.choice(string.digits) for _ in range(length - len(prefix_digits) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def card_number(rng: random.Random) -> str:
    digits = luhn_complete(rng.choice(["4", "51", "55", "37"]), 16, rng)
    style = rng.choice(["spaces", "dashes", "plain", "dots"])
    groups = [digits[i:i + 4] for i in range(0, 16, 4)]
    return {"spaces": " ".join(groups), "dashes": "-".join(groups), "plain": digits, "dots": ".".join(groups)}[style]


def iban(rng: random.Random) -> str:
    country, bban_len = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    if country in ("GB", "NL"):
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            rng.choice(string.digits) for _ in range(bban_len - 4))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(bban_len))
    rearranged = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def phone(rng: random.Random) -> str:
    return rng.choice([
        lambda: f"+44 20 7{rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        lambda: f"+1 (415) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
        lambda: f"+49 30 {rng.randint(100000, 999999)}",
        lambda: f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        lambda: f"+91 98{rng.randint(10000000, 99999999)}",
    ])()


def email(rng: random.Random) -> str:
    first = rng.choice(["anna", "li.wei", "omar", "sofia", "j.smith", "maria", "kenji", "fatima"])
    domain = rng.choice(["example.com", "mail.example.org", "corp.example.net"])
    return f"{first}{rng.randint(1, 999)}@{domain}"


def national_id(rng: random.Random) -> str:
    """A US SSN-shaped number (never 000/666/9xx area) or a UK National Insurance number."""
    if rng.random() < 0.5:
        return f"{rng.randint(100, 665):03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}"
    letters = "ABCEGHJKLMNPRSTWXYZ"
    return f"{rng.choice(letters)}{rng.choice(letters)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.choice('ABCD')}"
