"""Analyst ratings: the contract, reading them from Kafka messages and dropped files, and
joining them to the samples they rate; no Dagster import.

One contract for every way a rating arrives (the rating page, a message on `cases.ratings`,
a CSV or JSONL file): `RatingSubmission`. A row that breaks it, or that does not fit the
sample it rates (unknown case, contradictory label, an action that was never proposed), is
rejected with its reasons and never stops the good rows. The latest rating per
(`event_id`, `analyst`) wins.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import polars as pl
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_assets.domain import current_pack

RATING_FILE_SUFFIXES = (".csv", ".jsonl", ".ndjson")
MAX_RAW_CHARS = 4096  # what a rejected row keeps of its raw text


RATINGS_SCHEMA = {
    "event_id": pl.String, "event_date": pl.String, "analyst": pl.String, "label_correct": pl.Boolean,
    "correct_label": pl.String, "model_label": pl.String, "label": pl.String,
    "actions_proposed": pl.List(pl.String), "actions_accepted": pl.List(pl.String),
    "rated_at": pl.Datetime("us", "UTC"), "text": pl.String, "model_version": pl.String,
    "prompt_version": pl.String, "source": pl.String, "source_ref": pl.String,
    "imported_at": pl.Datetime("us", "UTC"),
    "auth_method": pl.String,  # how the analyst was proven: token | proxy (the page); file; kafka (unproven)
}
REJECTED_SCHEMA = {
    "source": pl.String, "source_ref": pl.String, "raw": pl.String, "raw_sha256": pl.String,
    "reasons": pl.List(pl.String), "seen_at": pl.Datetime("us", "UTC"),
}
IMPORTED_FILES_SCHEMA = {
    "file_name": pl.String, "sha256": pl.String, "rows": pl.Int64, "accepted": pl.Int64, "rejected": pl.Int64,
    "imported_at": pl.Datetime("us", "UTC"),
}


class RatingSubmission(BaseModel):
    """One analyst's rating of one sampled case.

    `correct_label` is required when the label is wrong; `actions_accepted` lists the verbs
    of the proposed actions the analyst accepts (empty: none). `rated_at` carries a zone.
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    event_id: str = Field(min_length=1, max_length=200)
    analyst: str = Field(min_length=1, max_length=100)
    label_correct: bool
    correct_label: str | None = None  # one of the domain pack's labels
    actions_accepted: list[str] = Field(default_factory=list)  # the pack's verbs
    rated_at: AwareDatetime
    auth_method: str | None = Field(default=None, max_length=20)  # set by the rating page: token | proxy

    @field_validator("correct_label", mode="before")
    @classmethod
    def _blank_label_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("actions_accepted", mode="before")
    @classmethod
    def _actions_from_text(cls, value: Any) -> Any:
        """Files hold lists as text: a JSON list, or verbs separated by `;`, `,` or `|`."""
        if value is None:
            return []
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc.msg}") from exc
            return [part.strip() for part in re.split(r"[;,|]", text) if part.strip()]
        return value

    @field_validator("correct_label")
    @classmethod
    def _a_label_of_the_pack(cls, value: str | None) -> str | None:
        labels = current_pack().labels
        if value is not None and value not in labels:
            raise ValueError(f"{value!r} is not one of the labels {list(labels)}")
        return value

    @field_validator("actions_accepted")
    @classmethod
    def _verbs_of_the_pack(cls, value: list[str]) -> list[str]:
        verbs = current_pack().action_verbs
        unknown = [v for v in value if v not in verbs]
        if unknown:
            raise ValueError(f"{unknown} are not action verbs {list(verbs)}")
        return value

    @model_validator(mode="after")
    def _label_rules(self) -> "RatingSubmission":
        if not self.label_correct and self.correct_label is None:
            raise ValueError("correct_label is required when label_correct is false")
        self.actions_accepted = list(dict.fromkeys(self.actions_accepted))  # one vote per verb
        return self

    def message(self, **context: Any) -> bytes:
        """The JSON value published to `cases.ratings` (`context`: what the analyst saw, e.g. `model_label`)."""
        body = {**context, **self.model_dump(mode="json")}
        body["rated_at"] = self.rated_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return json.dumps(body, sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class Rejection:
    source: str       # "kafka" or "file"
    source_ref: str   # topic:partition:offset, or file name:line
    raw: str
    reasons: tuple[str, ...]

    @property
    def raw_sha256(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8", "replace")).hexdigest()

    def row(self, seen_at: datetime) -> dict:
        return {"source": self.source, "source_ref": self.source_ref, "raw": self.raw[:MAX_RAW_CHARS],
                "raw_sha256": self.raw_sha256, "reasons": list(self.reasons), "seen_at": seen_at}


@dataclass(frozen=True)
class Accepted:
    rating: RatingSubmission
    source: str
    source_ref: str


@dataclass
class ParsedRatings:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def extend(self, other: "ParsedRatings") -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected


def validation_reasons(exc: ValidationError) -> tuple[str, ...]:
    out = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        if where and isinstance(given, (str, int, float, bool)):  # say what was wrong, not only what is right
            message += f" (got {str(given)[:60]!r})"
        out.append(f"{where}: {message}" if where else message)
    return tuple(out)


def parse_rating(obj: Any, *, source: str, source_ref: str, raw: str) -> Accepted | Rejection:
    """One rating object checked against the contract."""
    if not isinstance(obj, dict):
        return Rejection(source, source_ref, raw, (f"not an object: {type(obj).__name__}",))
    try:
        return Accepted(RatingSubmission.model_validate(obj), source, source_ref)
    except ValidationError as exc:
        return Rejection(source, source_ref, raw, validation_reasons(exc))


def parse_messages(records: Iterable[tuple[str, int, int, bytes | None, bytes | None]]) -> ParsedRatings:
    """Kafka records `(topic, partition, offset, key, value)` of `cases.ratings` (key = event_id)."""
    parsed = ParsedRatings()
    for topic, partition, offset, key, value in records:
        ref = f"{topic}:{partition}:{offset}"
        raw = (value or b"").decode("utf-8", "replace")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            parsed.rejected.append(Rejection("kafka", ref, raw, (f"not JSON: {exc.msg}",)))
            continue
        result = parse_rating(obj, source="kafka", source_ref=ref, raw=raw)
        if isinstance(result, Accepted) and key is not None and key.decode("utf-8", "replace") != result.rating.event_id:
            result = Rejection("kafka", ref, raw, (f"key {key.decode('utf-8', 'replace')!r} is not the event_id",))
        (parsed.accepted if isinstance(result, Accepted) else parsed.rejected).append(result)
    return parsed


def parse_file(name: str, content: bytes) -> tuple[ParsedRatings, int]:
    """Ratings of a dropped file (CSV with a header row, or JSONL); returns them and the row count."""
    parsed = ParsedRatings()
    text = content.decode("utf-8-sig", "replace")
    rows = 0
    if name.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            rows += 1
            ref = f"{name}:{reader.line_num}"
            raw = json.dumps(row, ensure_ascii=False)
            if None in row:  # more cells than the header has
                parsed.rejected.append(Rejection("file", ref, raw, ("more cells than header columns",)))
                continue
            result = parse_rating(row, source="file", source_ref=ref, raw=raw)
            (parsed.accepted if isinstance(result, Accepted) else parsed.rejected).append(result)
        return parsed, rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rows += 1
        ref = f"{name}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            parsed.rejected.append(Rejection("file", ref, line, (f"not JSON: {exc.msg}",)))
            continue
        result = parse_rating(obj, source="file", source_ref=ref, raw=line)
        (parsed.accepted if isinstance(result, Accepted) else parsed.rejected).append(result)
    return parsed, rows


def rating_files(folder: Path) -> list[Path]:
    """The rating files in the drop folder (hidden files, e.g. partial uploads, left out)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RATING_FILE_SUFFIXES)


def proposed_verbs(actions_json: str | None) -> list[str]:
    """The verbs of a case's proposed actions (`actions` is the enriched JSON list)."""
    try:
        actions = json.loads(actions_json or "[]")
    except json.JSONDecodeError:
        return []
    return [str(a.get("action")) for a in actions if isinstance(a, dict) and a.get("action")]


def rating_rows(accepted: Sequence[Accepted], samples: pl.DataFrame,
                imported_at: datetime) -> tuple[pl.DataFrame, list[Rejection]]:
    """Ratings joined to the samples they rate, as `RATINGS_SCHEMA` rows; the misfits rejected.

    `label` is the right label (the model's when it was correct, else `correct_label`): what
    `models/embedding_gate` trains on, with the redacted `text`.
    """
    by_id = {r["event_id"]: r for r in samples.iter_rows(named=True)} if samples.height else {}
    rows, rejected = [], []
    for item in accepted:
        r = item.rating
        raw = r.model_dump_json()
        sample = by_id.get(r.event_id)
        if sample is None:
            rejected.append(Rejection(item.source, item.source_ref, raw,
                                      ("event_id is not a sample in evaluation/samples",)))
            continue
        reasons = []
        model_label = sample["label"]
        if r.label_correct and r.correct_label not in (None, model_label):
            reasons.append(f"label_correct is true but correct_label {r.correct_label!r} is not the case's "
                           f"label {model_label!r}")
        if not r.label_correct and r.correct_label == model_label:
            reasons.append(f"label_correct is false but correct_label is the case's label {model_label!r}")
        proposed = proposed_verbs(sample["actions"])
        unknown = [a for a in r.actions_accepted if a not in proposed]
        if unknown:
            reasons.append(f"actions_accepted {unknown} were not proposed for this case (proposed: {proposed})")
        if reasons:
            rejected.append(Rejection(item.source, item.source_ref, raw, tuple(reasons)))
            continue
        rows.append({
            "event_id": r.event_id, "event_date": sample["event_date"], "analyst": r.analyst,
            "label_correct": r.label_correct, "correct_label": r.correct_label, "model_label": model_label,
            "label": model_label if r.label_correct else r.correct_label,
            "actions_proposed": proposed, "actions_accepted": list(r.actions_accepted),
            "rated_at": r.rated_at.astimezone(timezone.utc), "text": sample["text"],
            "model_version": sample["model_version"], "prompt_version": sample["prompt_version"],
            "source": item.source, "source_ref": item.source_ref, "imported_at": imported_at,
            # A file is dropped by someone with access to the drop folder; a message without the page's
            # method came from a client that proved nothing.
            "auth_method": "file" if item.source == "file" else (r.auth_method or "unproven"),
        })
    return pl.DataFrame(rows, schema=RATINGS_SCHEMA), rejected


def latest_ratings(new: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The rows of `new` to write: the latest per (`event_id`, `analyst`), and only where no
    stored rating of that pair is more recent (an old file dropped late changes nothing)."""
    if new.is_empty():
        return new
    latest = new.sort("rated_at", maintain_order=True).unique(["event_id", "analyst"], keep="last",
                                                              maintain_order=True)
    if stored.is_empty():
        return latest
    current = stored.select("event_id", "analyst", pl.col("rated_at").alias("stored_rated_at"))
    return (latest.join(current, on=["event_id", "analyst"], how="left")
            .filter(pl.col("stored_rated_at").is_null() | (pl.col("rated_at") >= pl.col("stored_rated_at")))
            .drop("stored_rated_at"))


def rejected_frame(rejections: Sequence[Rejection], seen_at: datetime) -> pl.DataFrame:
    return pl.DataFrame([r.row(seen_at) for r in rejections], schema=REJECTED_SCHEMA)
