"""The outbox of `enriched/cases`: a run killed (SIGKILL) anywhere between the Delta write and the
ledger's last record leaves nothing lost or doubled: the next run of the date audits and publishes
what it left, once. `verify-audit` then checks the manifest and every row. Real Delta, tansu and
Milvus Lite; the killed run is a process of its own (`tests/enrichment/outbox_run.py`)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from llm_assets import failpoints, settings
from llm_assets.asset_keys import ENRICHED_CASES, ENRICHED_OUTBOX
from llm_assets.dev.broker import create_topics
from llm_assets.dev.milvus import start_milvus_server
from llm_assets.enrichment import audit_verification, outbox
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from tests.enrichment.outbox_run import SEEDS, resources_of, run_day
from tests.enrichment.test_enriched_cases import _published
from tests.support.pipeline import materialize_keys, use_local_home, write_raw_events

pytestmark = pytest.mark.integration

ENRICHED_POINTS = [failpoints.AFTER_ENRICHED_WRITE, failpoints.AFTER_AUDIT_BUNDLE, failpoints.AFTER_AUDIT_RECORD,
                   failpoints.AFTER_PUBLISH]


@pytest.fixture(scope="module")
def home(tmp_path_factory, kafka_broker):
    """Five days of sample events in raw/events (one per fail point, one for verify-audit); seeds built;
    a `milvus-lite server` that the killed runs' processes and this one share."""
    root = tmp_path_factory.mktemp("outbox")
    with pytest.MonkeyPatch.context() as mp, start_milvus_server(root / "milvus_server") as milvus:
        use_local_home(mp, root)
        generate_sample_data(root / "sample_data", n_events=100, days=5, start_date=date(2026, 9, 1))
        create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
        resources = resources_of(root, kafka_broker, milvus.uri)
        per_day = write_raw_events(resources["delta"], root / "sample_data")
        assert materialize_keys(resources, SEEDS).success
        yield root, sorted(per_day), milvus.uri


@pytest.fixture
def env(home, monkeypatch):
    use_local_home(monkeypatch, home[0])
    return home


def _killed_run(root: Path, bootstrap: str, day: str, point: str, milvus_uri: str) -> subprocess.CompletedProcess:
    """The run of `day` in a process of its own, killed at `point`."""
    points = root / "failpoints"
    failpoints.arm(points, point)
    done = subprocess.run([sys.executable, "-m", "tests.enrichment.outbox_run", str(root), bootstrap, day,
                           milvus_uri],
                          env={**_environ(root), failpoints.FAILPOINTS_VARIABLE: str(points)},
                          capture_output=True, text=True, timeout=600)
    assert not (points / point).exists(), f"the run never reached the fail point:\n{done.stderr[-3000:]}"
    return done


def _environ(root: Path) -> dict[str, str]:
    import os

    return {**os.environ, "LLM_ASSETS_HOME": str(root), "SAMPLE_DATA_DIR": str(root / "sample_data")}


def _day_ids(resources, day: str) -> list[str]:
    return resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day])[
        "event_id"].to_list()


def _bundled(resources, day: str) -> Counter:
    """How many bundle files of the date list each event id."""
    from llm_assets.enrichment import audit

    key = resources["audit_signer"].signing_key.key
    counts: Counter = Counter()
    for path in resources["artifacts"].list(audit.bundle_folder(day)):
        result = audit.verify_bundle(resources["artifacts"].read_bytes(path), key)
        assert result.ok, f"{path}: {result.reason}"
        counts.update(result.event_ids)
    return counts


def _verify(root: Path, target: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = audit_verification.verify_command(target or str(root / "artifacts"), env={},
                                             key_file=root / "audit" / "signing.key", out=out,
                                             delta_root=str(root / "delta"))
    return code, out.getvalue()


@pytest.mark.parametrize("point", ENRICHED_POINTS)
def test_a_run_killed_after_the_enriched_write_is_finished_by_the_next_run_of_its_date_once(
        env, kafka_broker, point):
    root, days, milvus_uri = env
    day = days[ENRICHED_POINTS.index(point)]
    resources = resources_of(root, kafka_broker, milvus_uri)
    before = Counter(k for k, _ in _published(kafka_broker))

    killed = _killed_run(root, kafka_broker, day, point, milvus_uri)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-3000:]
    enriched = _day_ids(resources, day)
    assert enriched, "the killed run wrote enriched/cases before it died"

    recovered = run_day(resources, day)  # the retry, or the date's next micro-batch

    assert recovered.success
    assert sorted(_day_ids(resources, day)) == sorted(enriched)  # nothing enriched twice or lost
    published = Counter(k for k, _ in _published(kafka_broker)) - before
    assert published == Counter(set(enriched)), f"on cases.enriched not exactly once: {published}"
    assert _bundled(resources, day) == Counter(set(enriched)), "not in exactly one bundle each"
    code, report = _verify(root)
    assert code == 0, report
    assert f"OK partition {day}" in report
    meta = {m.partition: m.metadata for m in recovered.asset_materializations_for_node("enriched__cases")}[day]
    assert meta["cases_written"].value == 0 and meta["outbox_caught_up"].value > 0
    if point == failpoints.AFTER_PUBLISH:  # published before the kill: found on the topic, not sent again
        assert meta["outbox_found_on_topic"].value == len(enriched)


def test_verify_audit_names_a_deleted_bundle_and_a_case_edited_in_delta(env, kafka_broker):
    root, days, milvus_uri = env
    day = days[-1]
    resources = resources_of(root, kafka_broker, milvus_uri)
    assert run_day(resources, day).success
    code, report = _verify(root)
    assert code == 0, report
    ledger = resources["delta"].read(ENRICHED_OUTBOX)
    (bundle,) = outbox.bundles_by_day(ledger.filter(pl.col("event_date") == day))[day]

    table = DeltaTable(resources["delta"].uri(ENRICHED_CASES))
    victim = sorted(_day_ids(resources, day))[0]
    label = resources["delta"].read(ENRICHED_CASES).filter(pl.col("event_id") == victim)["label"].item()
    other = "other" if label != "other" else "fraud_suspected"
    table.update(predicate=f"event_id = '{victim}'", updates={"label": f"'{other}'"})
    code, report = _verify(root, target=str(root / "artifacts" / "audit" / "enriched_cases" / day))
    assert code == 1 and f"case {victim}:" in report, report

    table.update(predicate=f"event_id = '{victim}'", updates={"label": f"'{label}'"})
    assert _verify(root)[0] == 0
    resources["artifacts"].delete(bundle)
    code, report = _verify(root)
    assert code == 1
    assert f"{resources['artifacts'].uri(bundle)} is recorded in the manifest but missing" in report, report


def test_only_unrecorded_bundles_of_ended_runs_are_removed_never_those_from_before_the_ledger(tmp_path):
    from llm_assets.enrichment import audit
    from llm_assets.resources.artifacts import ArtifactStore

    store, key, day = ArtifactStore(root=str(tmp_path / "artifacts")), bytes(32), "2026-09-01"
    row = {"event_id": "e1", "event_date": day, "label": "other", "actions": "[]", "route": "local"}
    legacy = audit.build_bundle(day, [row], run_id="run-before-the-ledger")
    legacy["format"] = "llm-assets-audit/1"
    paths = {name: audit.write_bundle(store, bundle, key) for name, bundle in (
        ("legacy", legacy), ("orphan", audit.build_bundle(day, [row], run_id="run-that-died")),
        ("running", audit.build_bundle(day, [row], run_id="run-in-flight")),
        ("recorded", audit.build_bundle(day, [row], run_id="run-recorded")))}
    ledger = pl.DataFrame([{"event_date": day, "event_id": "e1", "row_sha256": "h", "state": "audited",
                            "bundle_path": paths["recorded"], "run_id": "run-recorded"}],
                          schema={k: v for k, v in outbox.LEDGER_SCHEMA.items()
                                  if k in ("event_date", "event_id", "row_sha256", "state", "bundle_path", "run_id")})

    removed = outbox.remove_orphan_bundles(store, day, ledger, "this-run", lambda run: run != "run-in-flight")

    assert removed == [paths["orphan"]]
    assert set(store.list(audit.bundle_folder(day))) == {paths["legacy"], paths["running"], paths["recorded"]}
