"""Test helpers that set up real upstream tables without going through Kafka."""

from datetime import datetime, timezone
from pathlib import Path

from llm_assets.ingest import contract
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain.packs.payments_ops.sample_data.generator import load_messages
from llm_assets.asset_keys import RAW_EVENTS


def use_local_home(mp, root: Path) -> None:
    """Point the code location at a test home on the embedded defaults: its Delta, artifacts and
    sample data under `root`, the local environment and a signing key generated there."""
    mp.setenv("LLM_ASSETS_HOME", str(root))
    mp.setenv("SAMPLE_DATA_DIR", str(root / "sample_data"))
    mp.delenv("AUDIT_SIGNING_KEY", raising=False)
    mp.delenv("LLM_ASSETS_ENV", raising=False)


def write_raw_events(delta: DeltaLakeStorage, sample_dir: Path) -> dict[str, int]:
    """Validate the sample messages with the ingest contract and MERGE them into raw/events.

    Returns the number of distinct events per `event_date`.
    """
    values = [m.value for m in load_messages(sample_dir)]
    frame = contract.valid_events_frame(contract.validate_values(values), topic="events.raw",
                                        partitions=[0] * len(values), offsets=list(range(len(values))),
                                        ingested_at=datetime.now(timezone.utc))
    per_day = {}
    for (day,), part in frame.group_by("event_date"):
        delta.merge(RAW_EVENTS, part, ["event_id"], partition_column="event_date", partition_value=day)
        per_day[day] = part.unique("event_id").height
    return per_day


def artifact_resources(root: Path) -> dict:
    """The artifact store and audit signer of a test home, laid out as the local default lays them out."""
    from llm_assets.resources.artifacts import ArtifactStore
    from llm_assets.resources.signing import AuditSigner

    return {"artifacts": ArtifactStore(root=str(root / "artifacts")),
            "audit_signer": AuditSigner(key_file=str(root / "audit" / "signing.key"))}


def graph_definitions():
    """Assets and checks of the curated, knowledge-base, gate and enrichment domains (not ingest)."""
    from llm_assets.curated.definitions import defs as curated_defs
    from llm_assets.enrichment.definitions import defs as enrichment_defs
    from llm_assets.gate.definitions import defs as gate_defs
    from llm_assets.knowledge_base.definitions import defs as kb_defs

    assets, checks = [], []
    for d in (curated_defs, kb_defs, gate_defs, enrichment_defs):
        assets += list(d.assets or [])
        checks += list(d.asset_checks or [])
    return assets, checks


def materialize_keys(resources: dict, keys: list[str], partition_key: str | None = None,
                     run_config: dict | None = None, instance=None):
    """Materialize asset keys (user strings) of the graph in-process; never raises on failure.

    A run holds one PartitionsDefinition: a partitioned run gets the daily assets, with
    `raw/events` standing in as a spec (it is written directly by the test set-up).
    """
    import dagster as dg

    from llm_assets.partitions import daily_partitions

    assets, checks = graph_definitions()
    if partition_key is not None:
        assets = [a for a in assets if a.partitions_def == daily_partitions]
        assets.append(dg.AssetSpec(["raw", "events"], partitions_def=daily_partitions))
        checks = [c for c in checks if c.partitions_def == daily_partitions]
    else:
        assets = [a for a in assets if a.partitions_def is None]
        checks = [c for c in checks if c.partitions_def is None]
    return dg.materialize(
        [*assets, *checks], selection=dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(k) for k in keys]),
        partition_key=partition_key, resources=resources, run_config=run_config, instance=instance,
        raise_on_error=False)
