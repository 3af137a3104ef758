"""The Dagster preview/beta APIs (and the one superseded command) this project uses on purpose,
silenced one by one for the console.

Every code-location load would print them again (hundreds of lines in a `make dev` session).
Only these messages are ignored; any other warning, and every deprecation, still shows.
`pyproject.toml` lists the same preview APIs for the test suite.
"""

import warnings

PREVIEW_APIS_IN_USE = (
    # Per-partition check specs: the only way to judge each date of a range run.
    "Specifying a partitions_def on an AssetCheckSpec",
    # Single-run backfills of curated and enriched (one LLM batch for many days).
    "Parameter `backfill_policy` of function `asset`",
    # Freshness policy and owners applied per group in one place (definitions.py).
    "Function `Definitions.map_resolved_asset_specs`",
    # Raised inside Dagster and dagster-dbt themselves.
    "Parameter `include_sources` of function `AssetSelection.all`",
    # `dagster dev` with our workspace.yaml, printed once per start: `dg dev` is advice, not a problem.
    "Function `dev_command` is superseded",
)


def ignore_known_preview_warnings() -> None:
    """Ignore exactly the messages above in this process."""
    for message in PREVIEW_APIS_IN_USE:
        warnings.filterwarnings("ignore", message=message)


def pythonwarnings() -> str:
    """The same filters as a `PYTHONWARNINGS` value, for child processes (`dagster dev`, the rating page)."""
    return ",".join(f"ignore:{message}" for message in PREVIEW_APIS_IN_USE)
