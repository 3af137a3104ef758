"""The `local` backend and the fallback: no LLM, rules plus the embedding classifier.

The label comes from the embedding gate's classifier (or, when no gate model exists
yet, from keyword rules with a low confidence); the summary is extractive from the
redacted text; actions and severity come from the playbook. Used for gate-routed cases
(route `gate`), for every other case when no LLM is configured (route `local`), and as the
fallback when the LLM fails (route `fallback`). Its version is named by `model_versions`.
"""

import hashlib
import json
import re
from typing import Sequence

from llm_assets.enrichment import playbook
from llm_assets.enrichment.types import CaseContext, CaseResult

LOCAL_RULES_VERSION = "local-rules@v1"
KEYWORD_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fraud_suspected", ("fraud", "chargeback", "takeover", "velocity", "synthetic identity", "stolen")),
    ("partner_mismatch", ("partner", "settlement report", "reconciliation", "remittance", "fee schedule")),
    ("routing_error", ("queue", "routed", "routing", "reassign", "assigned to")),
    ("data_quality", ("malformed", "null", "duplicate", "column", "missing", "invalid currency")),
)
SUMMARY_MAX_CHARS = 200
_LABEL_TITLES = {"data_quality": "Data quality", "partner_mismatch": "Partner mismatch",
                 "fraud_suspected": "Suspected fraud", "routing_error": "Routing error", "other": "Other"}


def keyword_label(text: str) -> tuple[str, float]:
    """The last-resort classifier: first keyword family found, with a deliberately low confidence."""
    lowered = text.lower()
    for label, words in KEYWORD_RULES:
        if any(w in lowered for w in words):
            return label, 0.5
    return "other", 0.3


def extractive_summary(redacted_text: str, label: str) -> str:
    """`<Label title>: <first sentence of the redacted text>`, cut at a word boundary."""
    first = re.split(r"(?<=[.;!?])\s", redacted_text.strip(), maxsplit=1)[0].rstrip(".;")
    if len(first) > SUMMARY_MAX_CHARS:
        first = first[:SUMMARY_MAX_CHARS].rsplit(" ", 1)[0] + "..."
    return f"{_LABEL_TITLES.get(label, label)}: {first}"


def input_sha256(case: CaseContext) -> str:
    """Hash of what a local decision saw: the redacted text and the non-PII fields."""
    canonical = json.dumps({"text": case.text, "fields": case.fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def enrich_locally(cases: Sequence[CaseContext], predictions: Sequence[tuple[str, float]] | None = None) -> list[CaseResult]:
    """One `CaseResult` per case, in order, without any LLM call."""
    results = []
    for i, case in enumerate(cases):
        label, confidence = predictions[i] if predictions is not None else keyword_label(case.text)
        is_exception = str(case.fields.get("is_exception", "")).lower() == "true"
        results.append(CaseResult(
            event_id=case.event_id,
            summary=extractive_summary(case.text, label),
            label=label,
            confidence=float(confidence),
            actions=playbook.actions_for(label),
            severity=playbook.severity_for(label, case.fields.get("partner_risk_tier"), is_exception),
            ok=True, error_kind=None, error=None, dropped_actions=0,
            redacted_prompt_sha256=input_sha256(case),
            prompt_tokens=0, completion_tokens=0, latency_s=0.0, calls=0,
        ))
    return results
