"""A pack's labelled cases (golden seed, calibration set) read into one shape.

A labelled case is a case as it arrives (the pack's own event field names: id, text and, when
present, partner key and source) plus `label`, and optionally `split` (`evaluation` or
`held_out`) and `actions`. JSONL, CSV, Parquet or a Delta table, by path or URI. Rows come back with the
canonical column names (`event_id`, `payload_raw`, `partner_id`, `source_system`, `label`,
`split`); `LabelledFileError` names the file, the row and the reason for anything unusable. A
location without a file suffix is a Delta table (a folder or an object-store URI).

Pure module: no Dagster import.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from llm_assets.domain.pack import DomainPack

SPLITS = ("evaluation", "held_out")
LABELLED_SCHEMA = {"event_id": pl.String, "payload_raw": pl.String, "partner_id": pl.String,
                   "source_system": pl.String, "label": pl.String, "split": pl.String}


class LabelledFileError(ValueError):
    """A labelled file that is missing, unreadable, empty or holds an unusable row."""


def json_object_line(text: str) -> dict:
    """One JSON Lines line that must hold a JSON object (a pack's golden, calibration and KB files);
    ValueError with the reason otherwise."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(row, dict):
        raise ValueError(f"not a JSON object: {type(row).__name__}")
    return row


def _read_rows(location: str) -> list[dict]:
    suffix = location.rsplit(".", 1)[-1].lower() if "." in Path(location).name else ""
    try:
        if suffix == "csv":
            return pl.read_csv(location, infer_schema=False).to_dicts()
        if suffix == "parquet":
            return pl.read_parquet(location).to_dicts()
        if not suffix:  # a folder or a table URI: a Delta table
            return pl.read_delta(location).to_dicts()
        import fsspec
        with fsspec.open(location, "rt", encoding="utf-8") as f:
            rows = []
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json_object_line(line))
                except ValueError as exc:
                    raise LabelledFileError(f"{location}:{number}: {exc}") from None
            return rows
    except LabelledFileError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise LabelledFileError(f"{location}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None


def read_labelled(pack: DomainPack, location: str | None, *, what: str = "golden cases") -> pl.DataFrame:
    """The labelled cases at `location` (resolved against the pack folder), canonical columns, by `event_id`."""
    resolved = pack.resolve(location)
    if resolved is None:
        raise LabelledFileError(f"the pack {pack.name} names no file of {what}")
    rows = _read_rows(resolved)
    if not rows:
        raise LabelledFileError(f"{resolved}: no {what} in it (an empty file)")
    names = pack.event.json_names
    out, labels = [], set(pack.labels)
    for number, row in enumerate(rows, start=1):
        event_id, text = row.get(names["event_id"]), row.get(names["payload_raw"])
        label, split = row.get("label"), row.get("split")
        where = f"{resolved}: row {number}"
        if event_id in (None, "") or not isinstance(text, str) or not text.strip():
            raise LabelledFileError(f"{where}: needs `{names['event_id']}` and a non-empty `{names['payload_raw']}`")
        if label not in labels:
            raise LabelledFileError(f"{where}: label {label!r} is not one of the pack's labels {list(pack.labels)}")
        if split not in (None, "", *SPLITS):
            raise LabelledFileError(f"{where}: split {split!r} must be one of {list(SPLITS)} (or absent)")
        out.append({"event_id": str(event_id), "payload_raw": text,
                    "partner_id": str(row.get(names["partner_id"]) or ""),
                    "source_system": str(row.get(names["source_system"]) or ""),
                    "label": str(label), "split": split or None})
    frame = pl.DataFrame(out, schema=LABELLED_SCHEMA)
    duplicated = frame.filter(pl.col("event_id").is_duplicated())["event_id"].unique().sort().to_list()
    if duplicated:
        raise LabelledFileError(f"{resolved}: {len(duplicated)} {names['event_id']} value(s) appear twice, "
                                f"e.g. {duplicated[0]!r}")
    return frame.sort("event_id")
