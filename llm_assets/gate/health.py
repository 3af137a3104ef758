"""The gate on live traffic: which gated cases are audited, how precise the gate really is, and
which labels it stops serving.

The gate skips the LLM when it is sure; its thresholds are calibrated for a target precision on
labelled files, but nothing there says how it does on cases written by someone else. So:

- **Shadow audit.** A deterministic share of gated cases (`audit_bucket(event_id) < share`, 5% by
  default) plus a few per label per day (the labels the share missed) is also answered by the
  production LLM when one is configured. The row keeps `route = gate` and records the audit's
  answer (`audit_label`, `audit_source = llm`); analysts' ratings of gated cases count as audits
  too (`audit_source = rating`, `monitoring/gate_precision` adds them). Audits are capped per
  micro-batch (`max_audits`) and go to the LLM in the batch's one LLM call.
- **Realized precision** per label of the serving gate version, with a Wilson 95% interval, over
  the audits of a rolling window (`models/gate_audits`, one row per audited case).
- **Per-label shut-off.** A label whose interval lies wholly under the target (the upper bound
  below it: the audits show, at 95%, that the gate misses its promise there) is shut off for that
  gate version from the next micro-batch on: its confident cases go to the LLM (the local
  strategy without one) with a `route_reason` saying why. It stays shut for that version; a
  retrained gate that passes its guard is a new version and serves every label again. The
  decision, its numbers and its time are a row of `models/gate_shutoffs` and an observation on
  `models/embedding_gate`'s page.

Why the upper bound, not the lower one: a label needs about 124 audits without an error before
its Wilson lower bound reaches 0.97, weeks at a 5% audit share; a lower-bound rule would shut every
label long before the audits could clear it. `monitoring/gate_precision` still WARNs when the
lower bound is under the target and ERRORs when the point estimate is.

Pure functions over frames, plus the two small append-only ledgers (blind appends: concurrent
micro-batches of other dates never conflict).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping, Sequence

import dagster as dg
import polars as pl

from llm_assets.asset_keys import EMBEDDING_GATE, GATE_AUDITS, GATE_SHUTOFFS
from llm_assets.gate.model import DEFAULT_TARGET_PRECISION
from llm_assets.resources.delta import DeltaLakeStorage

DEFAULT_AUDIT_SHARE = 0.05
DEFAULT_MIN_AUDITS_PER_LABEL_PER_DAY = 3
DEFAULT_MAX_AUDIT_SHARE_OF_BATCH = 0.2  # at most this share of a batch's gated cases is audited
DEFAULT_WINDOW_DAYS = 7
# A label whose audits so far put it under target, before enough of them can judge it, is audited at
# this share of its gated cases (within the batch's cap): doubt is settled in hours, not days.
DEFAULT_DOUBT_SHARE = 0.5
# Fewer audits than this decide nothing (a label is not shut off on two or three answers).
DEFAULT_MIN_AUDITS = 8
Z_95 = 1.959964

AUDIT_SOURCES = ("llm", "rating")
AUDITS_SCHEMA = {
    "event_id": pl.String, "event_date": pl.String, "gate_version": pl.String, "label": pl.String,
    "audit_label": pl.String, "audit_source": pl.String, "audited_at": pl.Datetime("us", "UTC"),
}
SHUTOFFS_SCHEMA = {
    "gate_version": pl.String, "label": pl.String, "decided_at": pl.Datetime("us", "UTC"),
    "audited": pl.Int64, "confirmed": pl.Int64, "precision": pl.Float64, "lower": pl.Float64,
    "upper": pl.Float64, "target": pl.Float64, "reason": pl.String,
}


def audit_bucket(event_id: str) -> float:
    """The case's place in [0, 1) for the audit (salted: independent of the rollout's hash)."""
    digest = hashlib.sha256(f"gate-audit:{event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class AuditPlan:
    """What a micro-batch audits: `share` of its gated cases by hash (`doubt[label]` for a label in
    doubt), topped up to `quota[label]` for the labels still short today, at most `max_share` of its
    gated cases (and at least one); the cap keeps the lowest hashes."""

    share: float = DEFAULT_AUDIT_SHARE
    quota: Mapping[str, int] | None = None
    max_share: float = DEFAULT_MAX_AUDIT_SHARE_OF_BATCH
    doubt: Mapping[str, float] | None = None

    def select(self, event_ids: Sequence[str], labels: Sequence[str]) -> list[int]:
        """Indices (into the gated cases given) to audit: deterministic, bounded."""
        if not event_ids or self.share <= 0 and not self.quota and not self.doubt:
            return []
        buckets = [audit_bucket(e) for e in event_ids]
        doubt = self.doubt or {}
        chosen = {i for i, b in enumerate(buckets) if b < max(self.share, doubt.get(labels[i], 0.0))}
        missing = {label: max(0, n - sum(labels[i] == label for i in chosen)) for label, n in (self.quota or {}).items()}
        for i in sorted(range(len(event_ids)), key=lambda i: buckets[i]):  # lowest bucket first: deterministic
            if i not in chosen and missing.get(labels[i], 0) > 0:
                chosen.add(i)
                missing[labels[i]] -= 1
        cap = max(1, math.floor(self.max_share * len(event_ids)))
        return sorted(sorted(chosen, key=lambda i: buckets[i])[:cap])


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (0, 1 without observations)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class LabelPrecision:
    """Realized precision of the gate on one label: of its audited gated cases, how many the audit confirmed."""

    label: str
    audited: int
    confirmed: int
    by_rating: int = 0

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.audited if self.audited else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.confirmed, self.audited)

    def below_target(self, target: float, min_audits: int = DEFAULT_MIN_AUDITS) -> bool:
        """The audits show (95%) that the gate misses `target` on this label: shut it off."""
        return self.audited >= min_audits and self.interval[1] < target

    def describe(self, target: float) -> str:
        lower, upper = self.interval
        return (f"realized precision {self.precision:.3f} [{lower:.3f}, {upper:.3f}] on {self.audited} audited "
                f"cases < target {target}")


def labels_in_doubt(precision: Mapping[str, LabelPrecision], target: float, min_audits: int = DEFAULT_MIN_AUDITS,
                    share: float = DEFAULT_DOUBT_SHARE) -> dict[str, float]:
    """Labels whose audited precision so far is under `target` but not yet shown to be (their
    upper bound still reaches it): audit them at `share` until the evidence decides."""
    return {label: share for label, p in precision.items()
            if p.audited and p.precision < target and not p.below_target(target, min_audits)}


def audits_frame(rows: Iterable[dict], audited_at: datetime | None = None) -> pl.DataFrame:
    """Ledger rows from enriched rows that carry an audit (`audit_label` set, route `gate`)."""
    at = audited_at or datetime.now(timezone.utc)
    kept = [{"event_id": r["event_id"], "event_date": r["event_date"], "gate_version": r["gate_version"],
             "label": r["label"], "audit_label": r["audit_label"], "audit_source": r["audit_source"],
             "audited_at": at}
            for r in rows if r.get("route") == "gate" and r.get("audit_label") and r.get("gate_version")]
    return pl.DataFrame(kept, schema=AUDITS_SCHEMA)


def record_audits(delta: DeltaLakeStorage, frame: pl.DataFrame) -> int:
    """Append audits to `models/gate_audits` (one row per audited case and source); returns the rows written."""
    if frame.height:
        delta.append(GATE_AUDITS, frame, partition_column="event_date")
    return frame.height


def read_audits(delta: DeltaLakeStorage, gate_version: str, days: Sequence[str]) -> pl.DataFrame:
    """The audits of `gate_version` on `days`, one per case (a rating wins over an LLM audit; the latest wins)."""
    if not delta.exists(GATE_AUDITS) or not days:
        return pl.DataFrame(schema=AUDITS_SCHEMA)
    found = (delta.scan(GATE_AUDITS).filter(pl.col("event_date").is_in(list(days))
                                            & (pl.col("gate_version") == gate_version)).collect())
    if not found.height:
        return found
    rank = pl.when(pl.col("audit_source") == "rating").then(1).otherwise(0)
    return (found.with_columns(rank.alias("_rank")).sort(["event_id", "_rank", "audited_at"])
            .unique("event_id", keep="last", maintain_order=True).drop("_rank"))


def realized_precision(audits: pl.DataFrame, labels: Sequence[str] = ()) -> dict[str, LabelPrecision]:
    """Per label the gate predicted: audited, confirmed (`audit_label` == `label`), by rating."""
    out = {label: LabelPrecision(label, 0, 0) for label in labels}
    if audits.height:
        grouped = audits.group_by("label").agg(
            pl.len().alias("audited"), (pl.col("audit_label") == pl.col("label")).sum().alias("confirmed"),
            (pl.col("audit_source") == "rating").sum().alias("by_rating"))
        for row in grouped.iter_rows(named=True):
            out[row["label"]] = LabelPrecision(row["label"], int(row["audited"]), int(row["confirmed"]),
                                               int(row["by_rating"]))
    return dict(sorted(out.items()))


def read_shutoffs(delta: DeltaLakeStorage, gate_version: str | None) -> dict[str, str]:
    """The labels `gate_version` no longer serves, with the reason each affected row carries."""
    if gate_version is None or not delta.exists(GATE_SHUTOFFS):
        return {}
    found = delta.scan(GATE_SHUTOFFS).filter(pl.col("gate_version") == gate_version).collect()
    return {row["label"]: f"gate shut off for {row['label']} since {row['decided_at']:%Y-%m-%d %H:%M:%S}Z: "
                          f"{row['reason']}"
            for row in found.sort("decided_at").unique("label", keep="first").iter_rows(named=True)}


def decide_shutoffs(precision: Mapping[str, LabelPrecision], already: Iterable[str], gate_version: str, *,
                    target: float = DEFAULT_TARGET_PRECISION, min_audits: int = DEFAULT_MIN_AUDITS,
                    decided_at: datetime | None = None) -> pl.DataFrame:
    """Rows of `models/gate_shutoffs` for the labels newly found under target (none already shut)."""
    at = decided_at or datetime.now(timezone.utc)
    shut = set(already)
    rows = []
    for label, p in precision.items():
        if label in shut or not p.below_target(target, min_audits):
            continue
        lower, upper = p.interval
        rows.append({"gate_version": gate_version, "label": label, "decided_at": at, "audited": p.audited,
                     "confirmed": p.confirmed, "precision": p.precision, "lower": lower, "upper": upper,
                     "target": target, "reason": p.describe(target)})
    return pl.DataFrame(rows, schema=SHUTOFFS_SCHEMA)


def shutoff_observation(row: Mapping) -> dg.AssetObservation:
    """A shut-off decision (a `models/gate_shutoffs` row) as an observation on `models/embedding_gate`'s page."""
    return dg.AssetObservation(asset_key=EMBEDDING_GATE, metadata={
        "gate_version": row["gate_version"], "shut_off_label": row["label"],
        "realized_precision": float(row["precision"]), "precision_lower": float(row["lower"]),
        "precision_upper": float(row["upper"]), "audited": int(row["audited"]), "target": float(row["target"]),
        "decided_at": row["decided_at"].isoformat(), "reason": row["reason"]})


def record_shutoffs(delta: DeltaLakeStorage, frame: pl.DataFrame) -> None:
    if frame.height:
        delta.append(GATE_SHUTOFFS, frame)


def window_days(day: str, days: int = DEFAULT_WINDOW_DAYS) -> list[str]:
    """`day` and the `days - 1` before it (ISO dates)."""
    end = datetime.fromisoformat(day).date()
    return [(end.fromordinal(end.toordinal() - k)).isoformat() for k in range(days)]


def audit_quota(audits: pl.DataFrame, days: Sequence[str], labels: Sequence[str],
                per_label_per_day: int = DEFAULT_MIN_AUDITS_PER_LABEL_PER_DAY) -> dict[str, int]:
    """How many more audits each label needs on `days` (the fewest any of them has) for `per_label_per_day`,
    given the serving gate's `audits` (`read_audits`, a window that holds `days`)."""
    if per_label_per_day <= 0 or not days:
        return {}
    have = {label: min(audits.filter((pl.col("label") == label) & (pl.col("event_date") == d)).height
                       for d in days) for label in labels}
    return {label: per_label_per_day - n for label, n in have.items() if n < per_label_per_day}


def gate_target(gate) -> float:
    """The precision a gate's thresholds were chosen for (its training metadata; the default before it)."""
    return float(gate.metadata.get("target_precision") or DEFAULT_TARGET_PRECISION)


def plan_audits(delta: DeltaLakeStorage, gate, days: Sequence[str], *, share: float = DEFAULT_AUDIT_SHARE,
                max_share: float = DEFAULT_MAX_AUDIT_SHARE_OF_BATCH,
                per_label_per_day: int = DEFAULT_MIN_AUDITS_PER_LABEL_PER_DAY,
                min_audits: int = DEFAULT_MIN_AUDITS) -> AuditPlan:
    """A micro-batch's audit plan for the serving `gate` on `days`: its audits so far (one read of the
    window ending on the latest day) give each label's daily top-up and the labels in doubt."""
    audits = read_audits(delta, gate.version, window_days(max(days)))
    so_far = realized_precision(audits, gate.labels)
    return AuditPlan(share=share, max_share=max_share,
                     quota=audit_quota(audits, days, gate.labels, per_label_per_day),
                     doubt=labels_in_doubt(so_far, gate_target(gate), min_audits))


def after_batch(delta: DeltaLakeStorage, rows: Sequence[dict], gate_version: str | None, shut: Iterable[str],
                labels: Sequence[str], *, target: float, min_audits: int = DEFAULT_MIN_AUDITS,
                days: int = DEFAULT_WINDOW_DAYS) -> tuple[int, dict[str, LabelPrecision], pl.DataFrame]:
    """Record a micro-batch's audits, then judge the serving gate on the window ending at its latest date:
    (audits recorded, realized precision per label, the shut-offs decided now and recorded)."""
    recorded = record_audits(delta, audits_frame(rows))
    if gate_version is None or not rows:
        return recorded, {}, pl.DataFrame(schema=SHUTOFFS_SCHEMA)
    window = window_days(max(r["event_date"] for r in rows), days)
    precision = realized_precision(read_audits(delta, gate_version, window), labels)
    decided = decide_shutoffs(precision, shut, gate_version, target=target, min_audits=min_audits)
    record_shutoffs(delta, decided)
    return recorded, precision, decided
