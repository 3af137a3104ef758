"""Deterministic, seeded generation of the sample data set.

`generate_sample_data(out_dir, ...)` writes everything the demo and the tests need:

- `events.jsonl`: the exact Kafka messages for `events.raw` (key, base64 value) with the
  kind of each (`valid`, `duplicate`, `malformed:<kind>`) and the PII planted in it;
- `entity_signals.jsonl`, `exceptions.jsonl`;
- `kb/*.jsonl`: policies, runbooks, data dictionary, resolved cases, escalation templates;
- `golden/cases.jsonl` (labelled cases of the phrasing families the KB and the gate train on),
  `golden/held_out.jsonl` (labelled cases of families, openers, closers and synonyms that
  neither training nor calibration ever saw), `golden/validation.jsonl` (the calibration split
  of the gate) and `golden/retrieval_queries.jsonl`.

Case texts are composed by `phrasings.compose`, which owns the train / validation / held_out split.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Literal

from . import catalog, phrasings, pii
from .phrasings import Split

GoldenSplit = Literal["in_distribution", "held_out"]
# Which phrasing split each golden set draws from (see `phrasings`).
GOLDEN_SPLITS: dict[str, Split] = {"in_distribution": "train", "held_out": "held_out"}

MALFORMED_KINDS = (
    "not_json", "empty_value", "nul_bytes", "missing_event_id", "bad_event_ts", "wrong_types", "oversized_payload",
)
DEFAULT_MAX_PAYLOAD_BYTES = 16_384


@dataclass(frozen=True)
class SampleMessage:
    """One Kafka message as produced to `events.raw`."""

    key: bytes | None
    value: bytes
    kind: str  # valid | duplicate | malformed:<kind>
    pii: tuple[str, ...] = field(default=())
    label: str | None = None


@dataclass(frozen=True)
class CaseText:
    text: str
    label: str
    pii: tuple[str, ...]
    family: str = ""  # the phrasing family (`label/name`), or `ambiguous`


def _fill(template: str, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    values = {
        "email": pii.email(rng), "card": pii.card_number(rng), "phone": pii.phone(rng), "iban": pii.iban(rng),
        "national_id": pii.national_id(rng),
        "partner": f"P-{rng.randint(1, 40):03d}", "ref": f"REF-{rng.randint(100000, 999999)}",
        "amount": f"{rng.uniform(10, 9000):.2f}", "amount2": f"{rng.uniform(10, 9000):.2f}",
        "n": str(rng.randint(2, 40)), "merchant": f"M-{rng.randint(1000, 9999)}",
        "system": rng.choice(catalog.SOURCE_SYSTEMS),
    }
    used = tuple(values[k] for k in ("email", "card", "phone", "iban", "national_id") if "{" + k + "}" in template)
    return template.format(**values), used


def case_text(rng: random.Random, ambiguous_share: float = 0.05, split: Split | None = None) -> CaseText:
    """One realistic case description with its true label and the PII planted in it.

    `split=None` draws from every phrasing split (live traffic); `train`, `validation` or
    `held_out` only from that split's families, openers, closers and synonyms.
    """
    if rng.random() < ambiguous_share:
        label, template = rng.choice(phrasings.ambiguous(split))
        template, family = phrasings.vary_surface(template, rng), "ambiguous"
    else:
        label = rng.choices(catalog.LABELS, weights=(25, 20, 20, 15, 20))[0]
        template, family = phrasings.compose(label, rng, split)
    text, used = _fill(template, rng)
    return CaseText(text=text, label=label, pii=used, family=family)


def _event_ts(rng: random.Random, start: date, days: int) -> str:
    day = start + timedelta(days=rng.randrange(days))
    moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(86_400))
    if rng.random() < 0.1:  # some producers send local time with an offset
        offset = timezone(timedelta(hours=2))
        return moment.astimezone(offset).isoformat()
    return moment.isoformat().replace("+00:00", "Z")


def _event(i: int, rng: random.Random, start: date, days: int, n_entities: int,
           id_prefix: str = "evt-") -> tuple[dict, CaseText]:
    case = case_text(rng)
    event = {
        "event_id": f"{id_prefix}{i:07d}",
        "source_system": rng.choice(catalog.SOURCE_SYSTEMS),
        "event_ts": _event_ts(rng, start, days),
        "partner_id": f"P-{rng.randint(1, 40):03d}",
        "entity_id": f"ENT-{rng.randint(1, n_entities):05d}",
        "payload_raw": case.text,
    }
    if rng.random() < 0.05:
        event["channel"] = rng.choice(["email", "phone", "portal"])  # extra field: kept, never an error
    return event, case


def _malformed(kind: str, i: int, rng: random.Random, start: date, days: int, max_payload_bytes: int) -> bytes:
    base, _ = _event(i, rng, start, days, 10)
    if kind == "not_json":
        return b"{event_id: evt-broken, this is not json"
    if kind == "empty_value":
        return b""
    if kind == "nul_bytes":
        return json.dumps(base).encode()[:40] + b"\x00\x00\x00" + b"tail"
    if kind == "missing_event_id":
        base.pop("event_id")
    elif kind == "bad_event_ts":
        base["event_ts"] = "yesterday around noon"
    elif kind == "wrong_types":
        base["partner_id"] = 17
        base["payload_raw"] = {"text": "nested"}
    elif kind == "oversized_payload":
        base["payload_raw"] = "x" * (max_payload_bytes + 100)
    return json.dumps(base).encode()


def generate_messages(
    n_events: int,
    seed: int = 7,
    start_date: date = date(2026, 11, 18),
    days: int = 3,
    malformed_share: float = 0.02,
    duplicate_share: float = 0.03,
    n_entities: int = 500,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    id_prefix: str = "evt-",
) -> list[SampleMessage]:
    """`n_events` distinct valid events, plus duplicates and malformed messages of every kind.

    Event ids are `{id_prefix}{n:07d}`: give each stream its own prefix so ids never collide.
    """
    rng = random.Random(seed)
    messages: list[SampleMessage] = []
    for i in range(n_events):
        event, case = _event(i, rng, start_date, days, n_entities, id_prefix)
        msg = SampleMessage(event["event_id"].encode(), json.dumps(event).encode(), "valid", case.pii, case.label)
        messages.append(msg)
        if rng.random() < duplicate_share:
            messages.append(SampleMessage(msg.key, msg.value, "duplicate", msg.pii, msg.label))
    n_malformed = max(len(MALFORMED_KINDS), int(n_events * malformed_share))
    for j in range(n_malformed):
        kind = MALFORMED_KINDS[j % len(MALFORMED_KINDS)]
        value = _malformed(kind, n_events + j, rng, start_date, days, max_payload_bytes)
        messages.insert(rng.randrange(len(messages) + 1), SampleMessage(f"bad-{j}".encode(), value, f"malformed:{kind}"))
    return messages


def entity_signals(seed: int = 7, n_entities: int = 500, coverage: float = 0.9) -> Iterator[dict]:
    """Signals for most entities; the rest are missing so the join's defaults are exercised."""
    rng = random.Random(seed + 1)
    for e in range(1, n_entities + 1):
        if rng.random() > coverage:
            continue
        yield {
            "entity_id": f"ENT-{e:05d}",
            "device_id": f"DEV-{rng.randint(1, 10**6):07d}",
            "customer_hash": hashlib.sha256(f"customer-{e}".encode()).hexdigest(),
            "partner_risk_tier": rng.choice(["low", "low", "medium", "high"]),
            "features": {
                "velocity_1h": round(rng.expovariate(0.5), 3),
                "chargeback_ratio": round(rng.betavariate(1, 30), 4),
                "account_age_days": float(rng.randint(1, 3000)),
                "amount_zscore": round(rng.gauss(0, 1), 3),
            },
        }


def exceptions(messages: list[SampleMessage], seed: int = 7, share: float = 0.3) -> Iterator[dict]:
    rng = random.Random(seed + 2)
    by_label = {"partner_mismatch": "amount_mismatch", "data_quality": "missing_field",
                "fraud_suspected": "velocity", "routing_error": "misroute"}
    for m in messages:
        if m.kind != "valid" or m.label not in by_label or rng.random() > share:
            continue
        yield {"event_id": m.key.decode(), "is_exception": True, "exception_type": by_label[m.label]}


def kb_corpus(seed: int = 7, resolved_per_label: int = 100) -> dict[str, list[dict]]:
    """The KB as JSONL files by name. Resolved cases carry their label and actions."""
    rng = random.Random(seed + 3)
    files: dict[str, list[dict]] = {
        "policies": [{"source": "policies", "id": i, "type": "policy", "label": lab, "content": c}
                     for i, lab, c in catalog.POLICIES],
        "runbooks": [{"source": "runbooks", "id": i, "type": "runbook", "label": lab, "content": c}
                     for i, lab, c in catalog.RUNBOOKS],
        "data_dictionary": [{"source": "data_dictionary", "id": f"data-dictionary-{name}", "type": "data_dictionary",
                             "content": f"Data dictionary: field {name}. {desc}"}
                            for name, desc in catalog.DATA_DICTIONARY],
        "escalation_templates": [{"source": "escalation_templates", "id": i, "type": "escalation_template",
                                  "label": lab, "content": c} for i, lab, c in catalog.ESCALATION_TEMPLATES],
    }
    resolved = []
    for label in catalog.LABELS:
        # Only the train split: the held-out golden set's phrasings never reach the KB or the gate.
        for k in range(resolved_per_label):
            template, _ = phrasings.compose(label, rng, "train")
            text, _ = _fill(template, rng)
            resolved.append({
                "source": "resolved_cases", "id": f"resolved-{label}-{k:03d}", "type": "resolved_case",
                "label": label, "actions": catalog.DEFAULT_ACTIONS[label],
                "content": f"Resolved case ({label}): {text} Resolution: "
                           + "; ".join(a["action"] + " - " + a["reason"] for a in catalog.DEFAULT_ACTIONS[label]),
            })
    files["resolved_cases"] = resolved
    return files


def _labelled_cases(n: int, seed: int, split: Split, prefix: str, ambiguous_share: float) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        case = case_text(rng, ambiguous_share=ambiguous_share, split=split)
        rows.append({"event_id": f"{prefix}-{i:05d}", "source_system": rng.choice(catalog.SOURCE_SYSTEMS),
                     "partner_id": f"P-{rng.randint(1, 40):03d}", "payload_raw": case.text, "label": case.label,
                     "actions": [a["action"] for a in catalog.DEFAULT_ACTIONS[case.label]], "pii": list(case.pii),
                     "family": case.family, "split": split})
    return rows


def golden_cases(n: int = 200, seed: int = 1007, *, split: GoldenSplit = "in_distribution") -> list[dict]:
    """Labelled golden cases: `in_distribution` (fresh cases of the phrasing families the KB and the gate
    train on) or `held_out` (families, openers, closers and synonyms never trained or calibrated on).

    Each row: event_id, source_system, partner_id, payload_raw, label, actions, pii, family, split.
    """
    if split not in GOLDEN_SPLITS:
        raise ValueError(f"unknown golden split {split!r}; expected one of {sorted(GOLDEN_SPLITS)}")
    prefix = "gold" if split == "in_distribution" else "gold-ho"
    return _labelled_cases(n, seed if split == "in_distribution" else seed + 1, GOLDEN_SPLITS[split], prefix, 0.05)


def calibration_cases(n: int = 500, seed: int = 2007) -> list[dict]:
    """Labelled cases of the `validation` phrasing split: what the gate calibrates and picks thresholds on."""
    return _labelled_cases(n, seed, "validation", "calib", 0.05)


def golden_queries() -> list[dict]:
    return [{"query": q, "relevant_doc_ids": list(ids)} for q, ids in catalog.GOLDEN_QUERIES]


def _write_jsonl(path: Path, rows) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def generate_sample_data(out_dir: Path, n_events: int = 3000, seed: int = 7, start_date: date = date(2026, 11, 18),
                         days: int = 3) -> dict[str, int]:
    """Write the whole sample data set under `out_dir`; returns line counts per file."""
    out_dir = Path(out_dir)
    messages = generate_messages(n_events, seed=seed, start_date=start_date, days=days)
    counts = {
        "events": _write_jsonl(out_dir / "events.jsonl", (
            {"key": m.key.decode() if m.key else None, "value_b64": base64.b64encode(m.value).decode(),
             "kind": m.kind, "pii": list(m.pii), "label": m.label} for m in messages)),
        "entity_signals": _write_jsonl(out_dir / "entity_signals.jsonl", entity_signals(seed)),
        "exceptions": _write_jsonl(out_dir / "exceptions.jsonl", exceptions(messages, seed)),
        "golden_cases": _write_jsonl(out_dir / "golden" / "cases.jsonl", golden_cases()),
        "golden_held_out": _write_jsonl(out_dir / "golden" / "held_out.jsonl", golden_cases(split="held_out")),
        "golden_validation": _write_jsonl(out_dir / "golden" / "validation.jsonl", calibration_cases()),
        "golden_queries": _write_jsonl(out_dir / "golden" / "retrieval_queries.jsonl", golden_queries()),
    }
    for name, rows in kb_corpus(seed).items():
        counts[f"kb/{name}"] = _write_jsonl(out_dir / "kb" / f"{name}.jsonl", rows)
    return counts


def load_messages(out_dir: Path) -> list[SampleMessage]:
    """Read `events.jsonl` back into messages, for producing to Kafka."""
    messages = []
    with (Path(out_dir) / "events.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            messages.append(SampleMessage(row["key"].encode() if row["key"] else None,
                                          base64.b64decode(row["value_b64"]), row["kind"], tuple(row["pii"]),
                                          row.get("label")))
    return messages
