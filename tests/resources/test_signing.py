"""`AuditSigner`: the audit signing key is resolved when the resource is set up, per environment."""

import os
import stat

import dagster as dg
import pytest

from llm_assets.resources.environments import resources_for
from llm_assets.resources.signing import AuditSigner, MissingSigningKey, load_signing_key

pytestmark = pytest.mark.unit


def test_local_key_is_generated_on_first_use_and_reused(tmp_path):
    key_file = tmp_path / "audit" / "signing.key"
    first = load_signing_key(None, key_file, create=True)
    assert key_file.is_file()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(first.key) == 32
    assert "generated on first use" in first.source and str(key_file) in first.source
    second = load_signing_key(None, key_file, create=True)
    assert second.key == first.key
    assert "generated on first use" not in second.source
    assert first.key.hex() not in repr(first)


def test_configured_key_wins_and_hex_is_decoded(tmp_path):
    key_file = tmp_path / "signing.key"
    from_hex = load_signing_key("ab" * 32, key_file, create=True)
    assert from_hex.key == bytes.fromhex("ab" * 32) and "AUDIT_SIGNING_KEY" in from_hex.source
    assert load_signing_key("a passphrase", key_file, create=True).key == b"a passphrase"
    assert not key_file.exists()


def test_no_key_and_no_key_file_raises_naming_the_variable():
    with pytest.raises(MissingSigningKey, match="AUDIT_SIGNING_KEY"):
        load_signing_key("  ", None, create=True)


def test_local_signer_generates_its_key_when_set_up(tmp_path):
    key_file = tmp_path / "home" / "audit" / "signing.key"
    with dg.build_resources({"signer": AuditSigner(key_file=str(key_file))}) as resources:
        assert key_file.is_file()
        assert resources.signer.signing_key.key == bytes.fromhex(key_file.read_text().strip())


def test_production_signer_without_the_variable_fails_at_set_up(monkeypatch, tmp_path):
    monkeypatch.delenv("AUDIT_SIGNING_KEY", raising=False)
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    signer = resources_for("prod")["audit_signer"]
    with pytest.raises(dg.DagsterInvalidConfigError, match="AUDIT_SIGNING_KEY"):
        with dg.build_resources({"audit_signer": signer}):
            pass
    monkeypatch.setenv("AUDIT_SIGNING_KEY", "")  # set but empty is no key either
    with pytest.raises(dg.DagsterResourceFunctionError) as failed:
        with dg.build_resources({"audit_signer": resources_for("prod")["audit_signer"]}):
            pass
    assert isinstance(failed.value.user_exception, MissingSigningKey)
    assert "AUDIT_SIGNING_KEY" in str(failed.value.user_exception)
    assert not list(tmp_path.rglob("signing.key"))  # production never falls back to a local key file


def test_environments_bind_the_artifact_root_and_the_key_by_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    monkeypatch.delenv("ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("AUDIT_SIGNING_KEY", raising=False)
    prod = resources_for("prod")
    assert isinstance(prod["artifacts"].root, dg.EnvVar) and prod["artifacts"].root.env_var_name == "ARTIFACT_ROOT"
    assert isinstance(prod["audit_signer"].key, dg.EnvVar) and prod["audit_signer"].key_file is None
    local = resources_for("local")
    assert local["artifacts"].root == str(tmp_path / "artifacts")
    assert local["audit_signer"].key_file == str(tmp_path / "audit" / "signing.key")
    monkeypatch.setenv("ARTIFACT_ROOT", "s3://bucket/artifacts")
    monkeypatch.setenv("AUDIT_SIGNING_KEY", "cd" * 32)
    local = resources_for("local")
    assert local["artifacts"].root == "s3://bucket/artifacts"
    assert isinstance(local["audit_signer"].key, dg.EnvVar)  # the UI shows the variable, never the secret
