"""Signed audit bundles in the artifact store: they verify, any changed byte or another key fails,
and `verify-audit` checks a file, a folder or a whole artifact root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from llm_assets.enrichment import audit, audit_verification
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.signing import load_signing_key
from llm_assets.domain.packs.payments_ops.sample_data import catalog

pytestmark = pytest.mark.integration

KEY = bytes.fromhex("11" * 32)


def _rows(n: int = 30) -> list[dict]:
    rows = []
    for i in reversed(range(n)):  # unsorted on purpose
        label = catalog.LABELS[i % len(catalog.LABELS)]
        rows.append({
            "event_id": f"evt-{i:07d}", "route": ("gate", "llm", "cache", "fallback")[i % 4],
            "model_version": "qwen-7b@abc123", "prompt_version": "classify/3", "kb_index_version": "kb-0f3e",
            "retrieved_doc_ids": [f"resolved-{label}-{i % 7:03d}", "policy-approvals"],
            # as stored in enriched/cases: a JSON list
            "actions": json.dumps(catalog.DEFAULT_ACTIONS[label]),
            "redacted_prompt_sha256": f"{i:064x}",
            "summary": "never audited", "label": label,
        })
    return rows


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(root=str(tmp_path / "artifacts"))


@pytest.fixture
def bundle_file(store) -> Path:
    """The local file of a written bundle, to damage byte by byte."""
    bundle = audit.build_bundle("2026-11-18", _rows(), run_id="run-1234")
    return Path(store.uri(audit.write_bundle(store, bundle, KEY)))


def test_bundle_lists_audited_fields_sorted_by_event_id():
    bundle = audit.build_bundle("2026-11-18", _rows(5), run_id="r1",
                                created_at=datetime(2026, 11, 19, 3, 0, tzinfo=timezone.utc))
    assert bundle["format"] == "llm-assets-audit/2"
    assert bundle["asset_key"] == "enriched/cases" and bundle["partition"] == "2026-11-18"
    assert bundle["created_at"] == "2026-11-19T03:00:00Z" and bundle["run_id"] == "r1"
    assert bundle["case_count"] == 5
    assert [c["event_id"] for c in bundle["cases"]] == [f"evt-{i:07d}" for i in range(5)]
    case = bundle["cases"][0]
    assert set(case) == {"event_id", "route", "model_version", "prompt_version", "kb_index_version",
                         "retrieved_doc_ids", "actions", "redacted_prompt_sha256", "label", "severity",
                         "gate_version", "row_sha256"}
    assert "summary" not in case  # the text is covered by row_sha256, never copied
    assert case["row_sha256"] == audit.row_sha256(next(r for r in _rows(5) if r["event_id"] == case["event_id"]))
    assert case["actions"][0] == {"action": "correct", "reason": "fix the malformed fields at the source record",
                                  "approval_level": "analyst"}


def test_duplicate_event_in_a_partition_is_refused():
    rows = _rows(3) + _rows(1)
    with pytest.raises(ValueError, match="appears twice"):
        audit.build_bundle("2026-11-18", rows, run_id=None)


def test_written_bundle_verifies(bundle_file, tmp_path):
    assert bundle_file == tmp_path / "artifacts" / "audit" / "enriched_cases" / "2026-11-18" / "run-1234.json"
    document = json.loads(bundle_file.read_text())
    assert document["signature"]["alg"] == "HMAC-SHA256"
    assert document["signature"]["key_id"] == audit.key_id(KEY)
    result = audit.verify_bundle(bundle_file.read_bytes(), KEY)
    assert result.ok, result.reason
    assert result.partition == "2026-11-18"
    assert result.event_ids == [f"evt-{i:07d}" for i in range(30)]
    assert not list(bundle_file.parent.glob(".*.tmp"))  # atomic write leaves no temp file


def test_bundle_without_run_id_is_named_by_its_timestamp(store):
    bundle = audit.build_bundle("2026-11-18", _rows(2), run_id=None,
                                created_at=datetime(2026, 11, 19, 3, 4, 5, tzinfo=timezone.utc))
    path = audit.write_bundle(store, bundle, KEY)
    assert path == "audit/enriched_cases/2026-11-18/20261119T030405Z.json"
    assert audit.verify_bundle(store.read_bytes(path), KEY).ok


def test_flipped_digit_in_an_event_id_fails_verification(bundle_file):
    raw = bundle_file.read_bytes()
    at = raw.index(b"evt-0000017") + len(b"evt-000001")
    bundle_file.write_bytes(raw[:at] + b"8" + raw[at + 1:])  # still valid JSON
    result = audit.verify_bundle(bundle_file.read_bytes(), KEY)
    assert not result.ok
    assert "changed after it was signed" in result.reason
    assert result.event_ids == [] and result.partition is None


def test_corrupted_json_fails_verification_with_a_reason(bundle_file):
    raw = bundle_file.read_bytes()
    at = raw.index(b":")  # the colon after "bundle": the file no longer parses
    bundle_file.write_bytes(raw[:at] + b";" + raw[at + 1:])
    result = audit.verify_bundle(bundle_file.read_bytes(), KEY)
    assert not result.ok
    assert "not valid JSON" in result.reason


def test_whitespace_added_to_the_file_fails_verification(bundle_file):
    raw = bundle_file.read_bytes()
    bundle_file.write_bytes(raw.replace(b'"cases":', b'"cases": ', 1))  # same meaning, other bytes
    result = audit.verify_bundle(bundle_file.read_bytes(), KEY)
    assert not result.ok
    assert "bytes were changed" in result.reason


def test_every_single_byte_change_fails_verification(store):
    raw = store.read_bytes(audit.write_bundle(store, audit.build_bundle("2026-11-18", _rows(2), run_id="r"), KEY))
    for at in range(len(raw)):
        changed = bytearray(raw)
        changed[at] = (changed[at] + 1) % 256
        result = audit.verify_bundle(bytes(changed), KEY)
        assert not result.ok, f"byte {at} changed and still verified"
        assert result.reason


def test_bundle_verified_with_another_key_fails(bundle_file):
    result = audit.verify_bundle(bundle_file.read_bytes(), bytes.fromhex("22" * 32))
    assert not result.ok
    assert "wrong key" in result.reason


def test_verify_command_reports_partition_cases_and_event_ids(store, tmp_path, capsys):
    key_file = tmp_path / "home" / "audit" / "signing.key"
    signing = load_signing_key(None, key_file, create=True)  # as the local default generates it
    path = audit.write_bundle(store, audit.build_bundle("2026-11-18", _rows(25), run_id="run-9"), signing.key)
    assert audit_verification.verify_command(store.uri(path), env={}, key_file=key_file) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK ") and "partition: 2026-11-18" in out and "cases: 25" in out
    assert "evt-0000019" in out and "evt-0000020" not in out and "(+5 more)" in out

    other = {"AUDIT_SIGNING_KEY": "33" * 32}
    assert audit_verification.verify_command(store.uri(path), env=other, key_file=key_file) == 1
    assert capsys.readouterr().out.startswith("FAILED ")


def test_verify_command_checks_every_bundle_in_a_folder(store, tmp_path, capsys):
    for day in ("2026-11-18", "2026-11-19"):
        audit.write_bundle(store, audit.build_bundle(day, _rows(3), run_id="r"), KEY)
    env = {"AUDIT_SIGNING_KEY": KEY.hex()}
    folder = store.uri("audit/enriched_cases")
    assert audit_verification.verify_command(folder, env=env, key_file=tmp_path / "none") == 0
    assert capsys.readouterr().out.count("OK ") == 2
    broken = Path(store.uri("audit/enriched_cases/2026-11-19/r.json"))
    broken.write_bytes(broken.read_bytes()[:-20])
    assert audit_verification.verify_command(folder, env=env, key_file=tmp_path / "none") == 1
    out = capsys.readouterr().out
    assert out.count("OK ") == 1 and f"FAILED {broken}" in out


def test_verify_command_on_an_artifact_root_checks_only_the_bundles(store, tmp_path, capsys):
    audit.write_bundle(store, audit.build_bundle("2026-11-18", _rows(3), run_id="r"), KEY)
    store.write_bytes("models/embedding_gate/abc/training.json", b"{}")  # not a bundle: never verified
    assert audit_verification.verify_command(store.uri(), env={"AUDIT_SIGNING_KEY": KEY.hex()}, key_file=tmp_path / "none") == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == 1 and "training.json" not in out


def test_verify_command_reads_bundles_from_a_non_local_artifact_root(tmp_path, capsys):
    remote = ArtifactStore(root=f"memory://audit-test-{uuid.uuid4().hex}")
    audit.write_bundle(remote, audit.build_bundle("2026-11-18", _rows(4), run_id="r"), KEY)
    env = {"AUDIT_SIGNING_KEY": KEY.hex()}
    assert audit_verification.verify_command(remote.uri(), env=env, key_file=tmp_path / "none") == 0
    out = capsys.readouterr().out
    assert out.startswith("OK memory://") and "cases: 4" in out


def test_verify_audit_command_line_accepts_an_artifact_root(store, tmp_path):
    audit.write_bundle(store, audit.build_bundle("2026-11-18", _rows(3), run_id="r"), KEY)
    env = {**os.environ, "AUDIT_SIGNING_KEY": KEY.hex(), "LLM_ASSETS_HOME": str(tmp_path / "home")}
    ok = subprocess.run([sys.executable, "-m", "llm_assets.cli", "verify-audit", store.uri()],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "partition: 2026-11-18" in ok.stdout
    missing = subprocess.run([sys.executable, "-m", "llm_assets.cli", "verify-audit", str(tmp_path / "nothing")],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no bundle files" in missing.stdout


def test_verify_command_without_any_key_fails_cleanly(bundle_file, tmp_path, capsys):
    fresh = tmp_path / "fresh-home" / "audit" / "signing.key"
    assert audit_verification.verify_command(str(bundle_file), env={}, key_file=fresh) == 1
    out = capsys.readouterr().out
    assert "no signing key" in out and "AUDIT_SIGNING_KEY" in out
    assert not fresh.exists()
