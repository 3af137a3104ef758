"""Which LLM answers teach the next embedding gate: selection, analyst overrides, provenance.

An enriched case becomes a training example when an LLM decided it (route `llm`, no fallback),
its answer is valid for the enrichment schema (one of the five labels, a confidence in [0, 1],
a severity 1..5, actions from the allow-list) and confident (`min_confidence`), its text did not
try to instruct the model (`injection_suspected`), and its answer does not contradict a confident
gate prediction (`gate_confidence` >= `GATE_SURE`) without an analyst's word on it.

Ratings (`evaluation/ratings`) are weighed, not obeyed (`evaluation.trust`): a quarantined analyst's
ratings count for nothing; the analysts' verdict on a case (their majority) becomes its label
(`label_source` = `analyst`), except that one analyst alone cannot flip a confident LLM answer: that
case is in review and teaches nothing until a second analyst rates it.

Each example keeps its provenance (which `model_version` / `prompt_version` labelled it, its
`event_id` and date, the gate version that let it through) and only the REDACTED case text: the
text is redacted here from `curated/cases`' `payload_raw`, as enrichment redacts it, and a text
in which the redactor still finds anything is dropped, never stored. One example per distinct
redacted text (`example_id` = its sha256). Pure logic: no Dagster.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

import polars as pl

from llm_assets.domain import current_pack
from llm_assets.evaluation import trust
from llm_assets.lib.redaction import find_pii, redact

DEFAULT_MIN_CONFIDENCE = 0.8
GATE_SURE = 0.9  # a gate prediction this confident is not overruled by an unrated LLM answer

EXAMPLES_SCHEMA = {
    "example_id": pl.String,        # sha256 of the redacted text: one example per distinct text
    "text": pl.String,              # redacted case text (what the gate embeds), never clear PII
    "label": pl.String,             # what the gate learns: the analyst's label when one rated the case
    "label_source": pl.String,      # llm | analyst
    "event_id": pl.String,
    "event_date": pl.String,
    "llm_label": pl.String,
    "llm_confidence": pl.Float64,
    "model_version": pl.String,     # the model version that labelled it
    "prompt_version": pl.String,
    "gate_version": pl.String,      # the gate that sent it to the LLM (null: none)
    "analyst": pl.String,
    "rated_at": pl.Datetime("us", "UTC"),
    "enriched_at": pl.Datetime("us", "UTC"),
    "distilled_at": pl.Datetime("us", "UTC"),  # when the example (with this label) first entered the set
}


@dataclass
class Selection:
    """The examples chosen, and how many candidates each rule turned away."""

    examples: pl.DataFrame
    candidates: int
    rejected: Counter = field(default_factory=Counter)
    overridden: int = 0   # examples whose label an analyst corrected
    confirmed: int = 0    # examples an analyst rated correct
    in_review: list[str] = field(default_factory=list)       # disputed by one analyst: waiting for a second
    quarantined: list[str] = field(default_factory=list)     # analysts whose ratings were left out
    injections: list[str] = field(default_factory=list)      # event ids of suspected injections turned away


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _schema_problem(row: dict, min_confidence: float) -> str | None:
    """Why an LLM answer is not a usable example (None when it is)."""
    pack = current_pack()
    if row.get("label") not in pack.labels:
        return "invalid_label"
    confidence = row.get("confidence")
    if confidence is None or not 0.0 <= float(confidence) <= 1.0:
        return "invalid_confidence"
    severity = row.get("severity")
    if severity is None or not 1 <= int(severity) <= 5:
        return "invalid_severity"
    try:
        actions = json.loads(row.get("actions") or "[]")
    except ValueError:
        return "invalid_actions"
    if not isinstance(actions, list) or len(actions) > pack.max_actions or any(
            not isinstance(a, dict) or a.get("action") not in pack.action_verbs
            or a.get("approval_level") not in pack.approval_levels for a in actions):
        return "invalid_actions"
    return None


def latest_ratings(ratings: pl.DataFrame) -> dict[str, dict]:
    """The latest rating per `event_id` (any analyst): `label_correct`, `correct_label`, `analyst`, `rated_at`."""
    needed = {"event_id", "label_correct", "correct_label", "rated_at"}
    if ratings.is_empty() or not needed <= set(ratings.columns):
        return {}
    columns = [c for c in ("event_id", "label_correct", "correct_label", "analyst", "rated_at") if c in ratings.columns]
    latest = ratings.select(columns).sort("rated_at").unique("event_id", keep="last")
    return {r["event_id"]: r for r in latest.to_dicts()}


def select_examples(enriched: pl.DataFrame, case_texts: dict[str, str], ratings: pl.DataFrame, *,
                    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                    redact_text: Callable[[str], str] = lambda t: redact(t).text,
                    now: datetime | None = None, released: dict[str, datetime] | None = None,
                    defences: bool = True) -> Selection:
    """Training examples from `enriched/cases` rows, the clear `payload_raw` of their cases
    (`case_texts`: event_id -> text, redacted here) and `evaluation/ratings`.

    Only rows an LLM decided are candidates. The returned frame follows `EXAMPLES_SCHEMA`,
    one row per distinct redacted text (an analyst's label first, then the latest enrichment).
    `released`: analysts' last reviews (`AnalystRegistry.released`). `defences=False` obeys the latest
    rating and ignores injection flags and the gate (what a benchmark compares with).
    """
    now = now or datetime.now(timezone.utc)
    rejected: Counter = Counter()
    candidates = enriched.filter(pl.col("route") == "llm") if enriched.height else enriched
    in_review: set[str] = set()
    quarantined: set[str] = set()
    if not defences:
        rated = {e: {**r, "label": r["correct_label"] if not r["label_correct"] else None}
                 for e, r in latest_ratings(ratings).items()}
    elif ratings.is_empty() or not {"event_id", "analyst", "label", "model_label", "rated_at"} <= set(ratings.columns):
        rated = {}
    else:
        quarantined = trust.quarantined(ratings, released)
        confidence = dict(candidates.select("event_id", "confidence").iter_rows()) if candidates.height else {}
        rated, in_review = trust.decided_labels(trust.trusted(ratings, released), confidence)
    rows, overridden, confirmed, injections = [], 0, 0, []
    for row in candidates.to_dicts():
        if row.get("fallback_reason"):
            rejected["fallback"] += 1
            continue
        problem = _schema_problem(row, min_confidence)
        if problem:
            rejected[problem] += 1
            continue
        if row["event_id"] in in_review:
            rejected["in_review"] += 1
            continue
        rating = rated.get(row["event_id"])
        if defences and row.get("injection_suspected"):
            rejected["injection_suspected"] += 1
            injections.append(row["event_id"])
            continue
        if defences and rating is None and row.get("gate_label") not in (None, row["label"]) \
                and float(row.get("gate_confidence") or 0.0) >= GATE_SURE:
            rejected["contradicts_a_confident_gate"] += 1
            continue
        label, source = row["label"], "llm"
        if rating is not None and not rating["label_correct"]:
            if rating.get("label") not in current_pack().labels:
                rejected["analyst_disagreed"] += 1
                continue
            label, source = rating["label"], "analyst"
        elif float(row["confidence"]) < min_confidence and rating is None:
            rejected["low_confidence"] += 1
            continue  # an analyst's "correct" vouches for a less confident answer
        raw = case_texts.get(row["event_id"])
        if raw is None:
            rejected["no_case_text"] += 1
            continue
        text = redact_text(raw).strip()
        if not text or find_pii(text):  # belt and braces: never store a text the redactor still flags
            rejected["empty_or_pii_text" if text else "empty_text"] += 1
            continue
        overridden += source == "analyst"
        confirmed += rating is not None and bool(rating["label_correct"])
        rows.append({
            "example_id": text_sha256(text), "text": text, "label": label, "label_source": source,
            "event_id": row["event_id"], "event_date": row.get("event_date"), "llm_label": row["label"],
            "llm_confidence": float(row["confidence"]), "model_version": row.get("model_version"),
            "prompt_version": row.get("prompt_version"), "gate_version": row.get("gate_version"),
            "analyst": rating.get("analyst") if rating else None, "rated_at": rating.get("rated_at") if rating else None,
            "enriched_at": row.get("enriched_at"), "distilled_at": now,
        })
    frame = pl.DataFrame(rows, schema=EXAMPLES_SCHEMA)
    if frame.height:
        # One example per text: an analyst's label beats the LLM's, then the latest enrichment.
        before = frame.height
        frame = (frame.with_columns((pl.col("label_source") == "analyst").alias("_by_analyst"))
                 .sort(["_by_analyst", "enriched_at"], nulls_last=False)
                 .unique("example_id", keep="last").drop("_by_analyst").sort("example_id"))
        if before > frame.height:
            rejected["duplicate_text"] += before - frame.height
    return Selection(frame, candidates=candidates.height, rejected=rejected, overridden=overridden,
                     confirmed=confirmed, in_review=sorted(in_review), quarantined=sorted(quarantined),
                     injections=injections)


def keep_first_distilled_at(selected: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """`distilled_at` of an example whose text and label were already in the set stays as it was:
    it says when the example (as labelled) arrived, which is what "new examples" counts."""
    if previous is None or previous.is_empty() or selected.is_empty():
        return selected
    earlier = previous.select("example_id", "label", pl.col("distilled_at").alias("_earlier"))
    return (selected.join(earlier, on=["example_id", "label"], how="left")
            .with_columns(pl.coalesce("_earlier", "distilled_at").alias("distilled_at")).drop("_earlier")
            .select(list(EXAMPLES_SCHEMA)))


def examples_version(examples: pl.DataFrame) -> str:
    """A short fingerprint of the set (example ids and labels): equal sets, equal versions."""
    digest = hashlib.sha256()
    for example_id, label in sorted(examples.select("example_id", "label").iter_rows()) if examples.height else []:
        digest.update(f"{example_id}:{label}\n".encode())
    return digest.hexdigest()[:12]


def new_examples(current: pl.DataFrame, used: pl.DataFrame | None) -> int:
    """Examples (text + label) in `current` that a gate trained on `used` has not seen."""
    if current.is_empty():
        return 0
    if used is None or used.is_empty():
        return current.height
    return current.join(used.select("example_id", "label"), on=["example_id", "label"], how="anti").height
