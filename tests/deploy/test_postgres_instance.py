"""The production instance's storage on a real Postgres: a Kafka batch through the ingest runs,
then curation and enrichment, and everything Dagster records lands in Postgres.

The instance is deploy/dagster.yaml with its own storage, concurrency and retry sections, and
Dagster's default run launcher instead of Kubernetes. `make test` and `make test-fast` start a
Postgres (tests/services.sh, tests/deploy/postgres.sh) and export LLM_ASSETS_TEST_PG_URL; without it
the test skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from llm_assets import settings
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS
from llm_assets.dev.broker import create_topics
from llm_assets.dev.daemon import drain_topic
from llm_assets.resources.environments import resources_for
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data, load_messages
from tests.deploy.conftest import load_instance, production_instance_config
from tests.support.pipeline import materialize_keys

pytestmark = pytest.mark.integration

psycopg2 = pytest.importorskip("psycopg2")

PG_URL_ENV = "LLM_ASSETS_TEST_PG_URL"
SEED_ASSETS = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index", "models/embedding_gate"]


@pytest.fixture(scope="module")
def postgres() -> dict:
    """A fresh database on the Postgres of LLM_ASSETS_TEST_PG_URL, dropped afterwards."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is unset: no Postgres to test the production storage against "
                    "(`eval \"$(tests/deploy/postgres.sh start)\"` starts one; `make test` does)")
    try:
        admin = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"Postgres at {PG_URL_ENV} is unreachable: {exc}")
    admin.autocommit = True
    name = f"llm_assets_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    parts = urlparse(url)
    try:
        yield {"host": parts.hostname, "port": parts.port or 5432, "user": parts.username,
               "password": parts.password or "", "dbname": name}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def pipeline_on_postgres(postgres, kafka_broker, tmp_path_factory):
    """Ingest one day of sample events from Kafka, then seed, curate and enrich it, all recorded
    in the production instance on Postgres."""
    root = tmp_path_factory.mktemp("postgres_instance")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"DAGSTER_PG_HOST": postgres["host"], "DAGSTER_PG_PORT": str(postgres["port"]),
                            "DAGSTER_PG_USERNAME": postgres["user"], "DAGSTER_PG_PASSWORD": postgres["password"],
                            "DAGSTER_PG_DB": postgres["dbname"], "LLM_ASSETS_HOME": str(root),
                            "SAMPLE_DATA_DIR": str(root / "sample_data"),
                            "KAFKA_BOOTSTRAP_SERVERS": kafka_broker}.items():
            mp.setenv(name, value)
        for name in ("LLM_ASSETS_ENV", "LLM_BASE_URL", "LLM_BACKEND", "DELTA_ROOT", "MILVUS_URI",
                     "AUDIT_SIGNING_KEY", "ARTIFACT_ROOT"):
            mp.delenv(name, raising=False)

        config = production_instance_config()
        config.pop("run_launcher")  # Dagster's default launcher: no cluster here
        home = root / "dagster_home"
        instance = load_instance(home, config)

        generate_sample_data(root / "sample_data", n_events=60, days=1)
        topic = f"events.raw.pg-{uuid.uuid4().hex[:8]}"
        mp.setenv("KAFKA_EVENTS_TOPIC", topic)
        create_topics(kafka_broker, {topic: 1, settings.ENRICHED_TOPIC: 3})
        resources = resources_for("local")  # the local environment's bindings, on this test's folder
        resources["kafka"].produce_batch(topic, [(m.key, m.value) for m in load_messages(root / "sample_data")])
        # What the daemon does: tick kafka_events_sensor, execute the runs it requests.
        ingest = drain_topic(instance, {k: resources[k] for k in ("kafka", "delta", "kafka_ingest")}, quiet=True)
        assert ingest["runs"]["ingest_events_job"] >= 1 and not ingest["failed_run_keys"], ingest["skip_reason"]

        day = sorted(instance.get_materialized_partitions(RAW_EVENTS))[0]
        assert materialize_keys(resources, SEED_ASSETS, instance=instance).success
        assert materialize_keys(resources, ["curated/cases"], partition_key=day, instance=instance).success
        assert materialize_keys(resources, ["enriched/cases"], partition_key=day, instance=instance).success
        yield instance, postgres, day, home


def _query(postgres: dict, sql: str, *args) -> list[tuple]:
    with psycopg2.connect(**postgres) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_runs_event_logs_and_check_results_are_stored_in_postgres(pipeline_on_postgres):
    instance, postgres, day, _ = pipeline_on_postgres

    runs = _query(postgres, "SELECT run_id, pipeline_name, status FROM runs")
    assert {status for _, _, status in runs} == {"SUCCESS"}
    assert "ingest_events_job" in {job for _, job, _ in runs}
    assert len(runs) == len(instance.get_runs()) >= 4
    for run_id, _, _ in runs:  # every run's event log is in Postgres, from start to success
        types = {t for (t,) in _query(postgres, "SELECT DISTINCT dagster_event_type FROM event_logs "
                                                "WHERE run_id = %s", run_id)}
        assert {"PIPELINE_START", "PIPELINE_SUCCESS", "STEP_SUCCESS"} <= types

    stored_keys = {k for (k,) in _query(postgres, "SELECT asset_key FROM asset_keys")}
    for key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES):
        assert json.dumps(key.path) in stored_keys
    assert day in instance.get_materialized_partitions(ENRICHED_CASES)

    checks = _query(postgres, "SELECT check_name, execution_status FROM asset_check_executions "
                              "WHERE asset_key = %s", json.dumps(ENRICHED_CASES.path))
    statuses: dict[str, set[str]] = {}
    for name, status in checks:  # a row per planned and per evaluated execution
        statuses.setdefault(name, set()).add(status)
    for blocking in ("labels_and_confidence_valid", "no_pii_in_outputs", "one_row_per_curated_case"):
        assert "SUCCEEDED" in statuses[blocking] and "FAILED" not in statuses[blocking], (blocking, statuses)
    raw_checks = _query(postgres, "SELECT count(*) FROM asset_check_executions WHERE asset_key = %s",
                        json.dumps(RAW_EVENTS.path))
    assert raw_checks[0][0] > 0


def test_the_documented_pool_limit_command_writes_the_limit_to_postgres(pipeline_on_postgres):
    instance, postgres, _, home = pipeline_on_postgres
    # The command from docs/operations.md, against this instance (DAGSTER_HOME with its dagster.yaml).
    dagster = Path(sys.executable).parent / "dagster"
    subprocess.run([str(dagster), "instance", "concurrency", "set", "llm", "3"], check=True,
                   env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, timeout=120)
    assert instance.event_log_storage.get_concurrency_info("llm").slot_count == 3
    assert _query(postgres, "SELECT count(*) FROM concurrency_slots WHERE concurrency_key = 'llm'")[0][0] == 3
