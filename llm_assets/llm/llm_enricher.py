"""The LLM strategy of enrichment: cases in, `CaseResult`s out, over the `LLMResource` transport.

Per case: build the redacted messages of each skill of the call mode (`prompts`), send them as
`LLMRequest`s with the skill's JSON schema, parse the answers (`parsing`), re-ask ONCE when an
answer is unusable, merge the skills' answers, and add up what the case cost. The transport
only moves requests; what a request says and what an answer means is decided here.

A re-ask appends a fixed note to the same conversation (never the model's own text, which
could carry PII back into a prompt) and, for an answer cut off by `max_tokens`, doubles it:
at temperature 0 the same request would most likely get the same unusable answer.

`LLMEnricher(transport)` is the pipeline's `llm` callable: one result per case, in order,
never raising for a case (a case without a usable answer comes back `ok=False` with an
`error_kind`, and the pipeline sends it down the fallback route).
"""

import asyncio
from dataclasses import dataclass, replace
from typing import Sequence

from llm_assets.llm.model_versions import ModelDescription
from llm_assets.llm.parsing import InvalidModelOutput, ParsedEnrichment, merge_answers, parse_skill_answer
from llm_assets.llm.prompts import PromptTemplate, build_messages, prompt_sha256, templates_for
from llm_assets.llm.types import CaseContext, CaseResult
from llm_assets.resources.llm import NOT_CONFIGURED, LLMAnswer, LLMRequest, LLMResource, run_blocking

DEFAULT_MAX_TOKENS = 512  # one combined answer is about 150-250 tokens; too small truncates the JSON
REASK_NOTES = {
    "truncated": "Your previous answer was cut off before the JSON object closed.",
    "invalid_output": "Your previous answer was not one JSON object following the schema.",
}
REASK_INSTRUCTION = "Answer again with exactly one complete JSON object that follows the schema, and nothing else."


def model_backend(transport: LLMResource) -> str:
    """`server`, `offline`, or `local` when the transport has no LLM configured."""
    backend = transport.resolved_backend()
    return "local" if backend == NOT_CONFIGURED else backend


def describe(transport: LLMResource, *, call_mode: str = "combined", gate_version: str | None = None) -> ModelDescription:
    """The `ModelDescription` of what will decide the cases (for `model_versions.versions_for`)."""
    backend = model_backend(transport)
    return ModelDescription(backend=backend, model=None if backend == "local" else transport.model_id(),
                            call_mode=call_mode, gate_version=gate_version)


def skill_request(template: PromptTemplate, messages: list[dict], *, max_tokens: int | None,
                  temperature: float | None) -> LLMRequest:
    return LLMRequest(messages=messages, json_schema=template.schema, schema_name=template.skill,
                      max_tokens=max_tokens, temperature=temperature)


def reask_request(request: LLMRequest, kind: str) -> LLMRequest:
    """The one re-ask after an unusable answer of `kind` (`truncated` or `invalid_output`)."""
    note = f"{REASK_NOTES.get(kind, REASK_NOTES['invalid_output'])} {REASK_INSTRUCTION}"
    max_tokens = request.max_tokens * 2 if kind == "truncated" and request.max_tokens else request.max_tokens
    return replace(request, messages=[*request.messages, {"role": "user", "content": note}], max_tokens=max_tokens)


def parse_answer(template: PromptTemplate, answer: LLMAnswer) -> ParsedEnrichment:
    """The validated fields of one answer; `InvalidModelOutput` (kind `truncated` when the model
    stopped on its token limit) when it cannot be used."""
    try:
        return parse_skill_answer(template.skill, answer.text or "")
    except InvalidModelOutput as exc:
        if answer.finish_reason == "length":
            exc.kind = "truncated"
        raise


@dataclass
class _SkillOutcome:
    """One skill's answer for one case after the transport's retries and our re-ask."""

    parsed: ParsedEnrichment | None = None
    error_kind: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    calls: int = 0

    def add(self, answer: LLMAnswer) -> None:
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        self.latency_s += answer.latency_s
        self.calls += answer.attempts


class LLMEnricher:
    """Enriches cases with an LLM through `transport` (see the module docstring)."""

    def __init__(self, transport: LLMResource, *, call_mode: str = "combined",
                 max_tokens: int | None = DEFAULT_MAX_TOKENS, temperature: float | None = 0.0):
        if not transport.configured:
            raise ValueError("LLMEnricher needs a configured LLM transport; without one use the local strategy")
        self.transport = transport
        self.templates = templates_for(call_mode)  # validates the call mode
        self.call_mode = call_mode
        self.max_tokens = max_tokens
        self.temperature = temperature

    def __call__(self, cases: Sequence[CaseContext]) -> list[CaseResult]:
        """Enrich every case (blocking): one result per case, same order; failures come back flagged."""
        return run_blocking(self.enrich(list(cases))) if cases else []

    async def enrich(self, cases: list[CaseContext]) -> list[CaseResult]:
        async with self.transport.session() as session:
            # Admit a bounded number of cases at once so prompts are built just in time, while
            # the others wait on I/O (None: the offline engine wants every request at once).
            limit = self.transport.preferred_in_flight()
            admitted = asyncio.Semaphore(limit) if limit else None

            async def one(case: CaseContext) -> CaseResult:
                if admitted is None:
                    return await self._enrich_case(session, case)
                async with admitted:
                    return await self._enrich_case(session, case)

            return list(await asyncio.gather(*(one(c) for c in cases)))

    async def _enrich_case(self, session, case: CaseContext) -> CaseResult:
        conversations = [build_messages(t, case) for t in self.templates]
        sha = prompt_sha256(conversations[0] if len(conversations) == 1 else conversations)
        asks = [self._ask(session, t, conv) for t, conv in zip(self.templates, conversations)]
        outcomes = [await asks[0]] if len(asks) == 1 else await asyncio.gather(*asks)
        usage = dict(redacted_prompt_sha256=sha, prompt_tokens=sum(o.prompt_tokens for o in outcomes),
                     completion_tokens=sum(o.completion_tokens for o in outcomes),
                     latency_s=round(sum(o.latency_s for o in outcomes), 6), calls=sum(o.calls for o in outcomes))
        failed = next((o for o in outcomes if o.error_kind), None)
        if failed is not None:
            return CaseResult.failed(case.event_id, failed.error_kind, failed.error or failed.error_kind, **usage)
        parsed = merge_answers([o.parsed for o in outcomes])
        return CaseResult(event_id=case.event_id, summary=parsed.summary, label=parsed.label,
                          confidence=parsed.confidence, actions=parsed.actions, severity=parsed.severity, ok=True,
                          dropped_actions=parsed.dropped_actions, **usage)

    async def _ask(self, session, template: PromptTemplate, messages: list[dict]) -> _SkillOutcome:
        outcome = _SkillOutcome()
        request = skill_request(template, messages, max_tokens=self.max_tokens, temperature=self.temperature)
        for attempt in range(2):  # the request, and one re-ask after an unusable answer
            answer = await session.complete(request)
            outcome.add(answer)
            if not answer.ok:
                outcome.error_kind, outcome.error = answer.error_kind, answer.error
                return outcome
            try:
                outcome.parsed = parse_answer(template, answer)
                return outcome
            except InvalidModelOutput as exc:
                if attempt == 1:
                    outcome.error_kind, outcome.error = exc.kind, f"{template.id}: {exc} (after one re-ask)"
                    return outcome
                request = reask_request(request, exc.kind)
        return outcome
