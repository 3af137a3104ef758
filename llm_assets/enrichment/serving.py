"""Which model version decides which case: the production version of `models/production`, its
gradual rollout, and the rows a promotion leaves behind. Pure module: no Dagster import.

- Nothing promoted yet (`ProductionState.version is None`): every case goes to the backend the
  environment configures (`LLM_BASE_URL` set: the server, else the local strategy), as before the
  registry existed; no row is ever "behind".
- A promoted version at rollout share `s` < 1 decides the cases whose `event_id` hash falls in the
  share (`serves_new_version`); the rest keep `previous_version`. Deterministic: the same cases
  on every run, and the cases of 5% stay in 25%.
- A row is behind when its `model_version` is not the registry version that serves its case now
  (after a promotion, a rollback or a larger share): `enriched/cases` enriches it again. The
  registry version of a row is its name (`registry.row_model_version`: the name, plus
  `+gate:<gate_version>` for the local backend; a new gate alone leaves a row current).
"""

from dataclasses import dataclass
from typing import Sequence

import polars as pl

from llm_assets.models.production import ProductionState

ENV_BACKEND = "environment"  # the label of the env-derived backend in metadata (nothing promoted)
_GATE_SUFFIX = "+gate:"  # registry.row_model_version's suffix of local versions


def is_version_of(model_version: str | None, name: str) -> bool:
    """Was a row with `model_version` decided by registry version `name` (whatever its gate)?"""
    return model_version is not None and (model_version == name or model_version.startswith(name + _GATE_SUFFIX))


def served_by(state: ProductionState, event_ids: Sequence[str]) -> list[str | None]:
    """The registry version that decides each case (None: nothing promoted, the env-derived backend)."""
    return [state.version_for(e) for e in event_ids]


def rows_behind(state: ProductionState, stored: pl.DataFrame) -> pl.DataFrame:
    """The stored rows (`event_id`, `model_version`, ...) whose case another version serves now."""
    if state.version is None or stored.is_empty():
        return stored.head(0)
    wanted = served_by(state, stored["event_id"].to_list())
    behind = [not is_version_of(mv, name) for mv, name in zip(stored["model_version"].to_list(), wanted)]
    return stored.filter(pl.Series(behind, dtype=pl.Boolean))


@dataclass(frozen=True)
class Role:
    """What a model version is to production now, for the metadata table."""

    name: str
    role: str      # production | previous (rollout) | environment (nothing promoted) | behind
    share: float   # configured share of cases


def roles(state: ProductionState) -> list[Role]:
    """The versions that serve cases now, with their configured shares."""
    if state.version is None:
        return [Role(ENV_BACKEND, "environment (nothing promoted)", 1.0)]
    if state.previous_version is None or state.rollout_share >= 1.0:
        return [Role(state.version, "production", 1.0)]
    return [Role(state.version, "production (rolling out)", state.rollout_share),
            Role(state.previous_version, "previous (rest of the cases)", 1.0 - state.rollout_share)]


def version_mix(state: ProductionState, partition: pl.DataFrame, written_ids: Sequence[str] = ()) -> list[tuple]:
    """(model_version, role, configured share, rows, share of rows, written by this run) per
    `model_version` in a partition (`event_id`, `model_version`): the table a person reads to see
    a rollout's split and the rows still behind."""
    if partition.is_empty():
        return []
    written = set(written_ids)
    current = {r.name: r for r in roles(state)}
    out = []
    counts = partition.group_by("model_version").agg(
        pl.len().alias("rows"), pl.col("event_id").is_in(list(written)).sum().alias("written")).sort("model_version")
    for mv, rows, n_written in counts.iter_rows():
        role = next((r for name, r in current.items() if name != ENV_BACKEND and is_version_of(mv, name)), None)
        if role is None:
            role = current.get(ENV_BACKEND) or Role(mv or "", "behind (re-enriched by the next run)", 0.0)
        out.append((mv, role.role, round(role.share, 4), rows, round(rows / partition.height, 4), n_written))
    return out

