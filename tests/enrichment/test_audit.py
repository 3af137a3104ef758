"""Signed audit bundles: they verify, any changed byte or another key fails, and keys are managed per environment."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import pytest

from llm_assets.enrichment import audit
from llm_assets.sample_data import catalog

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
def bundle_file(tmp_path):
    bundle = audit.build_bundle("2026-11-18", _rows(), run_id="run-1234")
    return audit.write_bundle(tmp_path / "audit", bundle, KEY)


def test_bundle_lists_audited_fields_sorted_by_event_id():
    bundle = audit.build_bundle("2026-11-18", _rows(5), run_id="r1",
                                created_at=datetime(2026, 11, 19, 3, 0, tzinfo=timezone.utc))
    assert bundle["format"] == "llm-assets-audit/1"
    assert bundle["asset_key"] == "enriched/cases" and bundle["partition"] == "2026-11-18"
    assert bundle["created_at"] == "2026-11-19T03:00:00Z" and bundle["run_id"] == "r1"
    assert bundle["case_count"] == 5
    assert [c["event_id"] for c in bundle["cases"]] == [f"evt-{i:07d}" for i in range(5)]
    case = bundle["cases"][0]
    assert set(case) == {"event_id", "route", "model_version", "prompt_version", "kb_index_version",
                         "retrieved_doc_ids", "actions", "redacted_prompt_sha256"}
    assert case["actions"][0] == {"action": "correct", "reason": "fix the malformed fields at the source record",
                                  "approval_level": "analyst"}


def test_duplicate_event_in_a_partition_is_refused():
    rows = _rows(3) + _rows(1)
    with pytest.raises(ValueError, match="appears twice"):
        audit.build_bundle("2026-11-18", rows, run_id=None)


def test_written_bundle_verifies(bundle_file, tmp_path):
    assert bundle_file == tmp_path / "audit" / "enriched_cases" / "2026-11-18" / "run-1234.json"
    document = json.loads(bundle_file.read_text())
    assert document["signature"]["alg"] == "HMAC-SHA256"
    assert document["signature"]["key_id"] == audit.key_id(KEY)
    result = audit.verify_bundle(bundle_file, KEY)
    assert result.ok, result.reason
    assert result.partition == "2026-11-18"
    assert result.event_ids == [f"evt-{i:07d}" for i in range(30)]
    assert not list(bundle_file.parent.glob(".*.tmp"))  # atomic write leaves no temp file


def test_bundle_without_run_id_is_named_by_its_timestamp(tmp_path):
    bundle = audit.build_bundle("2026-11-18", _rows(2), run_id=None,
                                created_at=datetime(2026, 11, 19, 3, 4, 5, tzinfo=timezone.utc))
    path = audit.write_bundle(tmp_path, bundle, KEY)
    assert path.name == "20261119T030405Z.json"
    assert audit.verify_bundle(path, KEY).ok


def test_flipped_digit_in_an_event_id_fails_verification(bundle_file):
    raw = bundle_file.read_bytes()
    at = raw.index(b"evt-0000017") + len(b"evt-000001")
    bundle_file.write_bytes(raw[:at] + b"8" + raw[at + 1:])  # still valid JSON
    result = audit.verify_bundle(bundle_file, KEY)
    assert not result.ok
    assert "changed after it was signed" in result.reason
    assert result.event_ids == [] and result.partition is None


def test_corrupted_json_fails_verification_with_a_reason(bundle_file):
    raw = bundle_file.read_bytes()
    at = raw.index(b":")  # the colon after "bundle": the file no longer parses
    bundle_file.write_bytes(raw[:at] + b";" + raw[at + 1:])
    result = audit.verify_bundle(bundle_file, KEY)
    assert not result.ok
    assert "not valid JSON" in result.reason


def test_whitespace_added_to_the_file_fails_verification(bundle_file):
    raw = bundle_file.read_bytes()
    bundle_file.write_bytes(raw.replace(b'"cases":', b'"cases": ', 1))  # same meaning, other bytes
    result = audit.verify_bundle(bundle_file, KEY)
    assert not result.ok
    assert "bytes were changed" in result.reason


def test_every_single_byte_change_fails_verification(tmp_path):
    bundle_file = audit.write_bundle(tmp_path, audit.build_bundle("2026-11-18", _rows(2), run_id="r"), KEY)
    raw = bundle_file.read_bytes()
    for at in range(len(raw)):
        changed = bytearray(raw)
        changed[at] = (changed[at] + 1) % 256
        bundle_file.write_bytes(bytes(changed))
        result = audit.verify_bundle(bundle_file, KEY)
        assert not result.ok, f"byte {at} changed and still verified"
        assert result.reason


def test_bundle_verified_with_another_key_fails(bundle_file):
    result = audit.verify_bundle(bundle_file, bytes.fromhex("22" * 32))
    assert not result.ok
    assert "wrong key" in result.reason


def test_missing_file_fails_without_raising(tmp_path):
    result = audit.verify_bundle(tmp_path / "nope.json", KEY)
    assert not result.ok and "cannot read" in result.reason


def test_local_key_is_generated_on_first_use_and_reused(tmp_path):
    first = audit.resolve_signing_key({}, tmp_path)
    key_file = tmp_path / "audit" / "signing.key"
    assert key_file.is_file()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(first.key) == 32
    assert "generated on first use" in first.source and str(key_file) in first.source
    second = audit.resolve_signing_key({"LLM_ASSETS_ENV": "local"}, tmp_path)
    assert second.key == first.key
    assert "generated on first use" not in second.source
    assert first.key.hex() not in repr(first)


def test_environment_key_wins_and_hex_is_decoded(tmp_path):
    from_hex = audit.resolve_signing_key({"AUDIT_SIGNING_KEY": "ab" * 32, "LLM_ASSETS_ENV": "prod"}, tmp_path)
    assert from_hex.key == bytes.fromhex("ab" * 32) and "AUDIT_SIGNING_KEY" in from_hex.source
    from_text = audit.resolve_signing_key({"AUDIT_SIGNING_KEY": "a passphrase"}, tmp_path)
    assert from_text.key == b"a passphrase"
    assert not (tmp_path / "audit" / "signing.key").exists()


def test_prod_without_key_raises_naming_the_variable(tmp_path):
    with pytest.raises(audit.MissingSigningKey, match="AUDIT_SIGNING_KEY"):
        audit.resolve_signing_key({"LLM_ASSETS_ENV": "prod"}, tmp_path)
    assert not (tmp_path / "audit" / "signing.key").exists()


def test_verify_command_reports_partition_cases_and_event_ids(tmp_path, capsys):
    signing = audit.resolve_signing_key({}, tmp_path)
    bundle = audit.build_bundle("2026-11-18", _rows(25), run_id="run-9")
    path = audit.write_bundle(audit.Path(tmp_path) / "audit", bundle, signing.key)
    assert audit.verify_command(str(path), env={}, home=tmp_path) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK ") and "partition: 2026-11-18" in out and "cases: 25" in out
    assert "evt-0000019" in out and "evt-0000020" not in out and "(+5 more)" in out

    other = {"AUDIT_SIGNING_KEY": "33" * 32}
    assert audit.verify_command(str(path), env=other, home=tmp_path) == 1
    assert capsys.readouterr().out.startswith("FAILED ")


def test_verify_command_checks_every_bundle_in_a_folder(tmp_path, capsys):
    for day in ("2026-11-18", "2026-11-19"):
        audit.write_bundle(tmp_path / "audit", audit.build_bundle(day, _rows(3), run_id="r"), KEY)
    env = {"AUDIT_SIGNING_KEY": KEY.hex()}
    assert audit.verify_command(str(tmp_path / "audit"), env=env, home=tmp_path) == 0
    assert capsys.readouterr().out.count("OK ") == 2
    broken = tmp_path / "audit" / "enriched_cases" / "2026-11-19" / "r.json"
    broken.write_bytes(broken.read_bytes()[:-20])
    assert audit.verify_command(str(tmp_path / "audit"), env=env, home=tmp_path) == 1
    assert "FAILED" in capsys.readouterr().out


def test_verify_command_without_any_key_fails_cleanly(bundle_file, tmp_path, capsys):
    assert audit.verify_command(str(bundle_file), env={}, home=tmp_path / "fresh-home") == 1
    assert "no signing key" in capsys.readouterr().out
    assert not (tmp_path / "fresh-home" / "audit" / "signing.key").exists()
