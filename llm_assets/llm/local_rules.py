"""The `local` backend and the fallback: no LLM, rules plus the embedding classifier.

The label comes from the embedding gate's classifier (or, when no gate model exists
yet, from the domain pack's keyword rules with a low confidence); the summary is extractive
from the redacted text; actions and severity come from the domain pack. Used for gate-routed cases
(route `gate`), for every other case when no LLM is configured (route `local`), and as the
fallback when the LLM fails (route `fallback`). Its version is named by `model_versions`.
"""

import hashlib
import json
import re
from typing import Sequence

from llm_assets.domain import current_pack
from llm_assets.llm.types import CaseContext, CaseResult

LOCAL_RULES_VERSION = "local-rules@v1"
SUMMARY_MAX_CHARS = 200


def local_prompt_version() -> str:
    """The `prompt_version` of local decisions: the rules' version and the domain pack's (its keyword
    rules, titles, actions and severities are what decide)."""
    return f"{LOCAL_RULES_VERSION}+{current_pack().version}"


def keyword_label(text: str) -> tuple[str, float]:
    """The last-resort classifier: the domain pack's keyword rules, with a deliberately low confidence."""
    return current_pack().keyword_label(text)


def extractive_summary(redacted_text: str, label: str) -> str:
    """`<Label title>: <first sentence of the redacted text>`, cut at a word boundary."""
    first = re.split(r"(?<=[.;!?])\s", redacted_text.strip(), maxsplit=1)[0].rstrip(".;")
    if len(first) > SUMMARY_MAX_CHARS:
        first = first[:SUMMARY_MAX_CHARS].rsplit(" ", 1)[0] + "..."
    return f"{current_pack().title(label)}: {first}"


def input_sha256(case: CaseContext) -> str:
    """Hash of what a local decision saw: the redacted text and the non-PII fields."""
    canonical = json.dumps({"text": case.text, "fields": case.fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def enrich_locally(cases: Sequence[CaseContext], predictions: Sequence[tuple[str, float]] | None = None) -> list[CaseResult]:
    """One `CaseResult` per case, in order, without any LLM call."""
    pack = current_pack()
    results = []
    for i, case in enumerate(cases):
        label, confidence = predictions[i] if predictions is not None else keyword_label(case.text)
        results.append(CaseResult(
            event_id=case.event_id,
            summary=extractive_summary(case.text, label),
            label=label,
            confidence=float(confidence),
            actions=pack.actions_for(label),
            severity=pack.severity_for(label, case.fields),
            ok=True, error_kind=None, error=None, dropped_actions=0,
            redacted_prompt_sha256=input_sha256(case),
            prompt_tokens=0, completion_tokens=0, latency_s=0.0, calls=0,
        ))
    return results
