"""The versioned prompts of the LLM skills and the JSON schemas their answers must follow.

Skills: `summarize`, `classify` (label, confidence, severity), `propose_actions` (at most 3,
allow-listed verbs, approval level), and `enrich_case`, which returns all three in ONE
structured-output call (the default: a third of the requests and one prompt prefill).

Each template carries a version; bump it whenever its text or schema changes (a snapshot test
of `PromptTemplate.fingerprint()` fails until you do). `PROMPT_VERSION` is what the
`prompt_version` column records. Prompts are built only from redacted text: `build_messages`
redacts again as a guard (idempotent), because KB documents such as resolved cases may carry
PII. `prompt_sha256` hashes the exact serialized messages sent. Pure module: no Dagster import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from llm_assets.enrichment.playbook import ACTION_VERBS, APPROVAL_LEVELS, LABELS, MAX_ACTIONS
from llm_assets.enrichment.redaction import redact_cached
from llm_assets.enrichment.types import CaseContext

MAX_RETRIEVED_DOCS = 5
MAX_DOC_CHARS = 600
CASE_FIELDS = ("source_system", "partner_id", "partner_risk_tier", "is_exception", "exception_type")

SYSTEM_PROMPT = (
    "You assist the operations analysts of a payments company with their case queue. "
    "Case texts are redacted: <CARD>, <EMAIL>, <PHONE>, <IBAN> and <NATIONAL_ID> stand for personal data; "
    "keep these placeholders as they are and never write personal data. "
    "Answer with exactly one JSON object that follows the requested schema and nothing else."
)

LABEL_GUIDE = (
    "Labels:\n"
    "- data_quality: null or malformed fields, invalid currency codes, shifted columns, duplicate ids, "
    "missing exchange rates.\n"
    "- partner_mismatch: a partner's settlement report, fees or accounts differ from our ledger or contract.\n"
    "- fraud_suspected: card velocity, account takeover, chargeback spikes, synthetic identities.\n"
    "- routing_error: the case sits in a queue that does not own its topic.\n"
    "- other: general enquiries and feedback that need no investigation."
)
SEVERITY_GUIDE = "Severity: 1 (no impact) to 5 (money or customers at risk now)."
ACTIONS_GUIDE = (
    f"Actions: at most {MAX_ACTIONS}. Each verb is one of {', '.join(ACTION_VERBS)}; give a short reason and "
    f"the approval level the approval policy requires ({', '.join(APPROVAL_LEVELS)})."
)
SUMMARY_GUIDE = "Summary: one or two sentences, at most 60 words: what happened, where, and what is at stake."

_ACTIONS_SCHEMA = {
    "type": "array",
    "maxItems": MAX_ACTIONS,
    "items": {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(ACTION_VERBS)},
            "reason": {"type": "string"},
            "approval_level": {"type": "string", "enum": list(APPROVAL_LEVELS)},
        },
        "required": ["action", "reason", "approval_level"],
        "additionalProperties": False,
    },
}
_PROPERTIES = {
    "summary": {"type": "string"},
    "label": {"type": "string", "enum": list(LABELS)},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "severity": {"type": "integer", "minimum": 1, "maximum": 5},
    "actions": _ACTIONS_SCHEMA,
}


def _object_schema(*names: str) -> dict:
    return {"type": "object", "properties": {n: _PROPERTIES[n] for n in names}, "required": list(names),
            "additionalProperties": False}


@dataclass(frozen=True)
class PromptTemplate:
    """One skill's prompt: its instructions, the answer schema, and whether it sees the KB."""

    skill: str
    version: str
    task: str
    schema: dict
    uses_retrieval: bool

    @property
    def id(self) -> str:
        return f"{self.skill}@{self.version}"

    def fingerprint(self) -> str:
        """A hash of everything that shapes the answer; it must change only with the version."""
        blob = json.dumps([SYSTEM_PROMPT, self.task, self.schema, self.uses_retrieval, MAX_RETRIEVED_DOCS,
                           MAX_DOC_CHARS, CASE_FIELDS], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def response_format(self) -> dict:
        """The OpenAI / vLLM `response_format` that constrains decoding to `schema`."""
        return {"type": "json_schema", "json_schema": {"name": self.skill, "schema": self.schema, "strict": True}}


SUMMARIZE = PromptTemplate(
    skill="summarize", version="v1", uses_retrieval=False, schema=_object_schema("summary"),
    task=f"Summarize the case for an analyst.\n{SUMMARY_GUIDE}",
)
CLASSIFY = PromptTemplate(
    skill="classify", version="v1", uses_retrieval=True, schema=_object_schema("label", "confidence", "severity"),
    task=("Classify the case into exactly one label, using the knowledge base and similar resolved cases.\n"
          f"{LABEL_GUIDE}\nConfidence: your probability in [0, 1] that the label is right.\n{SEVERITY_GUIDE}"),
)
PROPOSE_ACTIONS = PromptTemplate(
    skill="propose_actions", version="v1", uses_retrieval=True, schema=_object_schema("actions"),
    task=f"Propose the next actions for this case, following the policies and runbooks.\n{ACTIONS_GUIDE}",
)
ENRICH_CASE = PromptTemplate(
    skill="enrich_case", version="v1", uses_retrieval=True,
    schema=_object_schema("summary", "label", "confidence", "severity", "actions"),
    task=("Enrich the case in one answer, using the knowledge base and similar resolved cases.\n"
          f"{SUMMARY_GUIDE}\n{LABEL_GUIDE}\nConfidence: your probability in [0, 1] that the label is right.\n"
          f"{SEVERITY_GUIDE}\n{ACTIONS_GUIDE}"),
)

SKILLS: dict[str, PromptTemplate] = {t.skill: t for t in (SUMMARIZE, CLASSIFY, PROPOSE_ACTIONS, ENRICH_CASE)}
PER_SKILL_TEMPLATES = (SUMMARIZE, CLASSIFY, PROPOSE_ACTIONS)
CALL_MODES = ("combined", "per_skill")


def templates_for(call_mode: str) -> tuple[PromptTemplate, ...]:
    """The templates one case goes through: one call (`combined`) or three (`per_skill`)."""
    if call_mode == "combined":
        return (ENRICH_CASE,)
    if call_mode == "per_skill":
        return PER_SKILL_TEMPLATES
    raise ValueError(f"call_mode must be one of {CALL_MODES}, got {call_mode!r}")


def prompt_version(call_mode: str = "combined") -> str:
    """The `prompt_version` column: the ids of the templates used, joined by `+`."""
    return "+".join(t.id for t in templates_for(call_mode))


PROMPT_VERSION = prompt_version("combined")


def _render_fields(fields: dict[str, str]) -> str:
    lines = [f"- {name}: {redact_cached(str(fields[name]))}" for name in CASE_FIELDS if fields.get(name) not in (None, "")]
    return "\n".join(lines) or "- (none)"


def _render_retrieved(docs: list[dict]) -> str:
    if not docs:
        return "(no documents retrieved)"
    blocks = []
    for i, doc in enumerate(docs[:MAX_RETRIEVED_DOCS], start=1):
        label = f", label {doc['label']}" if doc.get("label") else ""
        content = redact_cached(str(doc.get("content", "")))[:MAX_DOC_CHARS]
        blocks.append(f"[{i}] {doc.get('doc_id', '?')} ({doc.get('type', 'document')}{label}): {content}")
    return "\n".join(blocks)


def build_messages(template: PromptTemplate, case: CaseContext) -> list[dict]:
    """The chat messages for one case and one skill; only redacted text goes in."""
    parts = [f"Case fields:\n{_render_fields(case.fields)}", f"<case>\n{redact_cached(case.text)}\n</case>"]
    if template.uses_retrieval:
        parts.append(f"Knowledge base, most relevant first:\n{_render_retrieved(case.retrieved)}")
    parts.append(f"Task ({template.id}): {template.task}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def prompt_sha256(messages: list) -> str:
    """sha256 of the exact serialized messages (one conversation, or the list of a case's conversations)."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
