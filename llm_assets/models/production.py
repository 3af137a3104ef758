"""The production model version: the promotion history in Delta and the gradual rollout rule.

`models/production` appends one row per promotion (history kept; the latest row wins):

| column | what it is |
|---|---|
| `promotion_id` | the run that promoted (the MERGE key: re-executing a run writes one row) |
| `version` | the promoted registry name |
| `previous_version` | what the cases outside the rollout share keep (None: the first version ever) |
| `rollout_share` | 0..1: the share of cases (by a hash of `event_id`) that get `version` |
| `action` | `promote` or `rollback` (promoting an earlier version again) |
| `promoted_at` | when (UTC) |
| `registry_fingerprint` | the version's content when promoted (versions are immutable) |
| `macro_f1`, `accuracy`, `check_run_id` | the golden-set evaluation and the passed check it rests on |
| `note` | why, in the promoter's words |

`enriched/cases` reads `current_production` and, per case, `serves_new_version`. Pure module:
no Dagster import (the Delta resource is passed in).
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # the resource is passed in; importing it would import Dagster
    from llm_assets.resources.delta import DeltaLakeStorage

PRODUCTION_KEY_COLUMNS = ("promotion_id",)
PRODUCTION_SCHEMA = {
    "promotion_id": pl.String, "version": pl.String, "previous_version": pl.String, "rollout_share": pl.Float64,
    "action": pl.String, "promoted_at": pl.Datetime("us", "UTC"), "registry_fingerprint": pl.String,
    "macro_f1": pl.Float64, "accuracy": pl.Float64, "check_run_id": pl.String, "note": pl.String,
}
_HASH_SPACE = float(2 ** 64)


@dataclass(frozen=True)
class ProductionState:
    version: str | None            # the promoted registry name (None: nothing promoted yet -> env-derived behaviour)
    previous_version: str | None   # what the rest of the cases keep during a rollout
    rollout_share: float           # 0..1 share of cases (by hash of event_id) that get `version`
    promoted_at: str | None

    def version_for(self, event_id: str) -> str | None:
        """The registry name that decides this case (None: nothing promoted yet)."""
        if self.version is None:
            return None
        if self.previous_version is None or serves_new_version(event_id, self.rollout_share):
            return self.version
        return self.previous_version


NOTHING_PROMOTED = ProductionState(version=None, previous_version=None, rollout_share=1.0, promoted_at=None)


def serves_new_version(event_id: str, share: float) -> bool:
    """Does this case get the new version at `share`? sha256 of `event_id` mapped to [0, 1), below
    the share: deterministic (a re-run picks the same cases) and monotone (the cases of 5% stay in 25%)."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    digest = hashlib.sha256(event_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPACE < share


def history(delta: "DeltaLakeStorage") -> pl.DataFrame:
    """Every promotion, oldest first (an empty frame with the schema before the first one)."""
    from llm_assets.asset_keys import MODELS_PRODUCTION  # the key lives with every other key (a Dagster module)

    if not delta.exists(MODELS_PRODUCTION):
        return pl.DataFrame(schema=PRODUCTION_SCHEMA)
    return delta.read(MODELS_PRODUCTION).sort("promoted_at")


def state_from_history(rows: pl.DataFrame) -> ProductionState:
    """The latest promotion of a history frame as a `ProductionState`."""
    if rows.is_empty():
        return NOTHING_PROMOTED
    latest = rows.sort("promoted_at").row(-1, named=True)
    promoted_at = latest["promoted_at"]
    return ProductionState(version=latest["version"], previous_version=latest["previous_version"],
                           rollout_share=float(latest["rollout_share"]),
                           promoted_at=promoted_at.isoformat() if promoted_at is not None else None)


def current_production(delta: "DeltaLakeStorage") -> ProductionState:
    """The production version from the `models/production` Delta table (history kept; the latest row wins)."""
    return state_from_history(history(delta))


def next_state(current: ProductionState, version: str, rollout_share: float) -> ProductionState:
    """The state after promoting `version` at `rollout_share`.

    A new version rolls out over what production fully served so far; raising the share of the
    version already rolling out (5% -> 25% -> 100%) keeps the same previous version.
    """
    if not 0.0 < rollout_share <= 1.0:
        raise ValueError(f"rollout_share must be in (0, 1], got {rollout_share}")
    previous = current.previous_version if current.version == version else current.version
    if previous == version:
        previous = None
    return ProductionState(version=version, previous_version=previous, rollout_share=rollout_share,
                           promoted_at=datetime.now(timezone.utc).isoformat())


def rollback_target(rows: pl.DataFrame) -> str | None:
    """The version a rollback promotes again: the latest promoted version other than the current one."""
    if rows.is_empty():
        return None
    ordered = rows.sort("promoted_at")["version"].to_list()
    current = ordered[-1]
    return next((v for v in reversed(ordered[:-1]) if v != current), None)


def promotion_row(promotion_id: str, state: ProductionState, *, action: str, registry_fingerprint: str,
                  macro_f1: float | None, accuracy: float | None, check_run_id: str | None,
                  note: str = "") -> pl.DataFrame:
    """One row of the `models/production` table."""
    return pl.DataFrame([{
        "promotion_id": promotion_id, "version": state.version, "previous_version": state.previous_version,
        "rollout_share": state.rollout_share, "action": action,
        "promoted_at": datetime.fromisoformat(state.promoted_at) if state.promoted_at else datetime.now(timezone.utc),
        "registry_fingerprint": registry_fingerprint, "macro_f1": macro_f1, "accuracy": accuracy,
        "check_run_id": check_run_id, "note": note,
    }], schema=PRODUCTION_SCHEMA)
