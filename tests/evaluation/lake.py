"""A small real lake for the evaluation and monitoring tests: `curated/cases` and `enriched/cases`
Delta tables of a few days, written directly (the enrichment itself is tested elsewhere).

Case texts come from the sample-data catalogue, with PII planted in them; enriched rows follow
`ENRICHED_SCHEMA` with the domain pack's actions and severities.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import polars as pl

from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES
from llm_assets.llm.pipeline import ENRICHED_SCHEMA, rows_frame
from llm_assets.domain import current_pack
from llm_assets.lib.redaction import redact
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain.packs.payments_ops.sample_data.generator import case_text

MODEL_VERSION = "local-rules@test"
CURATED_TEST_SCHEMA = {"event_id": pl.String, "event_date": pl.String, "source_system": pl.String,
                       "partner_id": pl.String, "payload_raw": pl.String}


@dataclass(frozen=True)
class Case:
    event_id: str
    day: str
    label: str
    text: str  # raw, PII included
    confidence: float
    severity: int


def make_cases(day: str, n: int, *, seed: int, prefix: str = "evt", label: str | None = None,
               texts: Sequence[str] | None = None) -> list[Case]:
    """`n` cases of `day` with catalogue texts (or the given `texts`); `label` forces one label."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        drawn = case_text(rng)
        while label is not None and drawn.label != label:
            drawn = case_text(rng)
        text = texts[i % len(texts)] if texts else drawn.text
        high_risk = rng.random() < 0.3
        cases.append(Case(f"{prefix}-{day}-{i:04d}", day, drawn.label, text,
                          round(rng.uniform(0.55, 0.99), 3), current_pack().severity_for(drawn.label, {"partner_risk_tier": "high" if high_risk else "low"})))
    return cases


def enriched_row(case: Case, *, model_version: str = MODEL_VERSION) -> dict:
    return {
        "event_id": case.event_id, "event_date": case.day,
        "summary": f"{case.label.replace('_', ' ')}: {redact(case.text).text[:80]}",
        "label": case.label, "confidence": case.confidence, "actions": json.dumps(current_pack().actions_for(case.label)),
        "severity": case.severity, "route": "local", "fallback_reason": None, "model_version": model_version,
        "prompt_version": "prompts@test", "kb_index_version": "kb@test", "gate_version": None,
        "gate_confidence": None, "retrieved_doc_ids": [], "redacted_prompt_sha256": "0" * 64,
        "input_sha256": "0" * 64, "llm_calls": 0, "served_from_cache": False,
        "enriched_at": datetime.now(timezone.utc),
    }


def write_cases(delta: DeltaLakeStorage, cases: Sequence[Case]) -> None:
    """MERGE the cases into curated/cases and enriched/cases, one MERGE per day."""
    for day in sorted({c.day for c in cases}):
        of_day = [c for c in cases if c.day == day]
        curated = pl.DataFrame([{"event_id": c.event_id, "event_date": day, "source_system": "payments-core",
                                 "partner_id": "P-001", "payload_raw": c.text} for c in of_day],
                               schema=CURATED_TEST_SCHEMA)
        delta.merge(CURATED_CASES, curated, ["event_id"], partition_column="event_date", partition_value=day)
        delta.merge(ENRICHED_CASES, rows_frame([enriched_row(c) for c in of_day], ENRICHED_SCHEMA), ["event_id"],
                    partition_column="event_date", partition_value=day)
