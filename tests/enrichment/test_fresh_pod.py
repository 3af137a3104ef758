"""Every production run is a fresh pod: the gate and the audit bundles live in the artifact store,
`enriched/cases` finds the gate through lineage, and a missing signing key stops a run before any write.

Shared, as in production: Delta, Milvus, the artifact root (`ARTIFACT_ROOT`, its own folder), the
run history (a Dagster instance reopened by each pod, Postgres in production) and
`AUDIT_SIGNING_KEY` (a Secret). Per pod: `LLM_ASSETS_HOME`, deleted when the pod ends.
"""

import contextlib
import shutil
from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

from llm_assets import settings
from llm_assets.asset_keys import EMBEDDING_GATE, ENRICHED_CASES, RESULT_CACHE
from llm_assets.enrichment import audit, audit_verification
from llm_assets.dev.broker import create_topics
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.environments import resources_for
from llm_assets.resources.milvus import MilvusResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from tests.support.pipeline import materialize_keys, write_raw_events
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

KEY_HEX = "5a" * 32
UPSTREAM = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, kafka_broker):
    """The shared storage, with raw/events, signals, the KB index and curated/cases for two days."""
    root = tmp_path_factory.mktemp("fresh_pod")
    shared = root / "shared"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("LLM_BASE_URL", "LLM_BACKEND", "LLM_MODEL", "LLM_API_KEY", "LLM_ASSETS_ENV"):
            mp.delenv(name, raising=False)
        mp.setenv("LLM_ASSETS_HOME", str(root / "pod-home"))
        mp.setenv("DELTA_ROOT", str(shared / "delta"))
        mp.setenv("ARTIFACT_ROOT", str(shared / "artifacts"))
        mp.setenv("SAMPLE_DATA_DIR", str(shared / "sample_data"))
        mp.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker)
        mp.setenv("AUDIT_SIGNING_KEY", KEY_HEX)
        generate_sample_data(shared / "sample_data", n_events=80, days=2)
        create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
        with pod(root) as (resources, instance):
            per_day = write_raw_events(resources["delta"], shared / "sample_data")
            assert materialize_keys(resources, UPSTREAM, run_config=QUIET, instance=instance).success
            for day in per_day:
                assert materialize_keys(resources, ["curated/cases"], partition_key=day, run_config=QUIET,
                                        instance=instance).success
        yield root, sorted(per_day)


@contextlib.contextmanager
def pod(root: Path):
    """One pod: an empty `LLM_ASSETS_HOME`, resources bound from the environment table, the run
    history reopened from its storage; the home is deleted when the pod ends."""
    home = Path(settings.llm_assets_home())
    assert home == root / "pod-home"
    home.mkdir(parents=True)
    (root / "run-history").mkdir(exist_ok=True)
    resources = resources_for("local")
    # Milvus is a server in production; here a Lite file beside the other shared state. (Not through
    # MILVUS_URI: pymilvus reads that variable itself and rejects a file path.)
    resources["milvus"] = MilvusResource(uri=str(root / "shared" / "milvus" / "kb.db"))
    try:
        yield resources, dg.DagsterInstance.local_temp(tempdir=str(root / "run-history"))
    finally:
        shutil.rmtree(home)


def _enrich(resources, instance, day, **config):
    run_config = {**QUIET, **({"ops": {"enriched__cases": {"config": config}}} if config else {})}
    return materialize_keys(resources, ["enriched/cases"], partition_key=day, run_config=run_config,
                            instance=instance)


def _metadata(result, key: dg.AssetKey) -> dict:
    [materialization] = result.asset_materializations_for_node("__".join(key.path))
    return {k: v.value for k, v in materialization.metadata.items()}


def _published_count(bootstrap: str) -> int:
    return len(read_topic(bootstrap, settings.ENRICHED_TOPIC))


def _table_version(resources, key: dg.AssetKey) -> int | None:
    return DeltaTable(resources["delta"].uri(key)).version() if resources["delta"].exists(key) else None


def test_prod_without_signing_key_refuses_enrichment_before_any_write(cluster, kafka_broker, monkeypatch):
    root, days = cluster
    monkeypatch.setenv("LLM_ASSETS_ENV", "prod")
    monkeypatch.delenv("AUDIT_SIGNING_KEY")
    with pod(root) as (resources, instance):
        # The artifact store and the signer exactly as production binds them; the rest stays local.
        resources.update({k: resources_for("prod")[k] for k in ("artifacts", "audit_signer")})
        artifacts = ArtifactStore(root=settings.artifact_root())  # the same root, readable outside a run
        before = (_table_version(resources, ENRICHED_CASES), _table_version(resources, RESULT_CACHE),
                  artifacts.list("audit"), _published_count(kafka_broker))

        with pytest.raises(dg.DagsterInvalidConfigError, match="AUDIT_SIGNING_KEY"):
            _enrich(resources, instance, days[0])

        after = (_table_version(resources, ENRICHED_CASES), _table_version(resources, RESULT_CACHE),
                 artifacts.list("audit"), _published_count(kafka_broker))
        assert after == before
        assert not list(Path(settings.llm_assets_home()).rglob("signing.key"))  # no local fallback in prod
    assert before[0] is None  # enriched/cases was never written at all (this test runs first)


def test_fresh_pods_find_the_gate_through_lineage_and_earlier_bundles_still_verify(cluster, capsys):
    root, (day_a, day_b) = cluster
    artifact_root = root / "shared" / "artifacts"

    with pod(root) as (resources, instance):
        trained = materialize_keys(resources, ["models/embedding_gate"], run_config=QUIET, instance=instance)
        assert trained.success
        gate = _metadata(trained, EMBEDDING_GATE)
        assert gate["artifact_uri"] == str(artifact_root / "models" / "embedding_gate" / gate["gate_version"])
        assert not (Path(settings.llm_assets_home()) / "models").exists()

    with pod(root) as (resources, instance):
        first = _enrich(resources, instance, day_a)
        assert first.success
        rows_a = resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day_a])
        first_bundle = _metadata(first, ENRICHED_CASES)["audit_bundle"]
        assert first_bundle.startswith(str(artifact_root / "audit" / "enriched_cases" / day_a))

    with pod(root) as (resources, instance):
        second = _enrich(resources, instance, day_b)
        assert second.success
        rows_b = resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day_b])
        # Environment-bound key, no local key file generated in the pod.
        assert not list(Path(settings.llm_assets_home()).rglob("signing.key"))

    for rows in (rows_a, rows_b):
        assert "gate" in set(rows["route"])
        assert set(rows["gate_version"]) == {gate["gate_version"]}

    capsys.readouterr()
    # The first pod's bundle outlived its pod: verify-audit on the artifact root checks both.
    assert audit_verification.verify_command(str(artifact_root), env={"AUDIT_SIGNING_KEY": KEY_HEX},
                                key_file=root / "no-local-key") == 0
    out = capsys.readouterr().out
    assert f"OK {first_bundle}:" in out
    assert out.count("OK ") == 2 and f"partition: {day_a}" in out and f"partition: {day_b}" in out
    verified = audit.verify_bundle(Path(first_bundle).read_bytes(), bytes.fromhex(KEY_HEX))
    assert sorted(verified.event_ids) == sorted(rows_a["event_id"])


def test_a_recorded_gate_missing_from_the_artifact_store_fails_the_run_clearly(cluster, tmp_path, monkeypatch):
    root, days = cluster
    monkeypatch.setenv("ARTIFACT_ROOT", str(tmp_path / "empty-artifacts"))
    with pod(root) as (resources, _):
        instance = dg.DagsterInstance.ephemeral()
        instance.report_runless_asset_event(dg.AssetMaterialization(EMBEDDING_GATE, metadata={"gate_version": "0123456789ab"}))
        before = _table_version(resources, ENRICHED_CASES)

        # A full refresh: the day may be enriched already, and an empty increment needs no gate.
        result = _enrich(resources, instance, days[0], full_refresh=True)

        assert not result.success
        [failure] = result.get_step_failure_events()
        message = failure.step_failure_data.error.to_string()
        assert "0123456789ab" in message and "ARTIFACT_ROOT" in message
        assert _table_version(resources, ENRICHED_CASES) == before
