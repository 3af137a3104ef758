"""Defensive parsing of model answers into validated fields.

Even with structured outputs an answer can arrive in a code fence, after a sentence of prose,
with text after the object, or cut off by `max_tokens`. `extract_json_object` finds the first
complete JSON object (and says `truncated` when it never closes); the `parse_*` functions
validate each field against the contract: a label from the allowed set, confidence in [0, 1],
severity 1..5, at most 3 actions with allow-listed verbs (others are dropped and counted).
Free text coming back (summary, reasons) is redacted again: a model must not re-emit PII.
Pure module: no Dagster import.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from llm_assets.domain import current_pack
from llm_assets.lib.redaction import redact

MAX_SUMMARY_CHARS = 1000
MAX_REASON_CHARS = 300
# An unknown approval level never lowers the bar: it becomes the highest one.

_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?")


class InvalidModelOutput(ValueError):
    """The answer cannot be used. `kind` is `truncated` or `invalid_output`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ParsedActions:
    actions: list[dict]
    dropped: int


@dataclass(frozen=True)
class ParsedEnrichment:
    """The validated fields of one case; a field is None when the skill that gives it was not asked."""

    summary: str | None = None
    label: str | None = None
    confidence: float | None = None
    severity: int | None = None
    actions: list[dict] | None = None
    dropped_actions: int = 0


def extract_json_object(text: str) -> dict:
    """The first complete top-level JSON object in `text`, ignoring fences, prose and trailing text."""
    if text is None or not text.strip():
        raise InvalidModelOutput("invalid_output", "empty answer")
    cleaned = _FENCE.sub("", text)
    start = cleaned.find("{")
    if start < 0:
        raise InvalidModelOutput("invalid_output", f"no JSON object in answer: {cleaned[:80]!r}")
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(cleaned)):
        ch = cleaned[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                try:
                    obj = json.loads(cleaned[start:i + 1])
                except json.JSONDecodeError as exc:
                    raise InvalidModelOutput("invalid_output", f"malformed JSON: {exc}") from exc
                return obj
    raise InvalidModelOutput("truncated", f"JSON object never closes ({len(cleaned) - start} chars)")


def parse_summary(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidModelOutput("invalid_output", "summary missing or empty")
    return redact(" ".join(value.split())).text[:MAX_SUMMARY_CHARS]


def parse_label(value: object) -> str:
    label = str(value or "").strip().lower().replace(" ", "_").replace("-", "_")
    labels = current_pack().labels
    if label not in labels:
        raise InvalidModelOutput("invalid_output", f"label {value!r} not in {labels}")
    return label


def _number(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidModelOutput("invalid_output", f"{name} is a boolean")
    try:
        number = float(str(value).strip().rstrip("%")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidModelOutput("invalid_output", f"{name} {value!r} is not a number") from exc
    if math.isnan(number) or math.isinf(number):
        raise InvalidModelOutput("invalid_output", f"{name} is {number}")
    return number


def parse_confidence(value: object) -> float:
    """A probability in [0, 1]; `85` or `"85%"` read as percentages, anything else clamped."""
    number = _number(value, "confidence")
    if 1 < number <= 100:
        number /= 100
    return round(min(1.0, max(0.0, number)), 4)


def parse_severity(value: object) -> int:
    """An integer 1..5, rounded and clamped."""
    return int(min(5, max(1, round(_number(value, "severity")))))


def parse_actions(value: object) -> ParsedActions:
    """Allow-listed actions (the domain pack's verbs), at most its `max_actions`; every removed item is
    counted in `dropped`; an unknown approval level becomes the pack's highest (the strictest)."""
    if not isinstance(value, list):
        raise InvalidModelOutput("invalid_output", "actions is not a list")
    pack = current_pack()
    kept: list[dict] = []
    dropped = 0
    for item in value:
        verb = str(item.get("action", "")).strip().lower() if isinstance(item, dict) else ""
        if verb not in pack.action_verbs or len(kept) >= pack.max_actions:
            dropped += 1
            continue
        level = str(item.get("approval_level", "")).strip().lower()
        reason = redact(" ".join(str(item.get("reason", "")).split())).text[:MAX_REASON_CHARS]
        kept.append({"action": verb, "reason": reason,
                     "approval_level": level if level in pack.approval_levels else pack.approval_levels[-1]})
    return ParsedActions(kept, dropped)


def parse_skill_answer(skill: str, text: str) -> ParsedEnrichment:
    """Validate one skill's answer text; raises `InvalidModelOutput` with its kind."""
    obj = extract_json_object(text)
    if not isinstance(obj, dict):
        raise InvalidModelOutput("invalid_output", "answer is not a JSON object")
    fields: dict = {}
    if skill in ("summarize", "enrich_case"):
        fields["summary"] = parse_summary(obj.get("summary"))
    if skill in ("classify", "enrich_case"):
        fields["label"] = parse_label(obj.get("label"))
        fields["confidence"] = parse_confidence(obj.get("confidence"))
        fields["severity"] = parse_severity(obj.get("severity"))
    if skill in ("propose_actions", "enrich_case"):
        parsed = parse_actions(obj.get("actions"))
        fields["actions"], fields["dropped_actions"] = parsed.actions, parsed.dropped
    if not fields:
        raise ValueError(f"unknown skill {skill!r}")
    return ParsedEnrichment(**fields)


def merge_answers(parts: list[ParsedEnrichment]) -> ParsedEnrichment:
    """Combine the per-skill answers of one case into one enrichment."""
    merged: dict = {"dropped_actions": 0}
    for part in parts:
        for name in ("summary", "label", "confidence", "severity", "actions"):
            if getattr(part, name) is not None:
                merged[name] = getattr(part, name)
        merged["dropped_actions"] += part.dropped_actions
    return ParsedEnrichment(**merged)
