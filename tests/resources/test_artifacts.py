"""`ArtifactStore`: bytes under one root URI, on a local folder and on a non-local fsspec filesystem."""

import uuid
from pathlib import Path

import pytest

from llm_assets.resources.artifacts import ArtifactStore

pytestmark = pytest.mark.unit


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> ArtifactStore:
    # memory:// stands for an object store: the same code path as s3:// (fsspec, one PUT per write).
    root = str(tmp_path / "artifacts") if request.param == "local" else f"memory://artifacts-{uuid.uuid4().hex}"
    return ArtifactStore(root=root)


def test_written_bytes_read_back_and_replace_the_previous_file(store):
    uri = store.write_bytes("models/gate/v1/model.bin", b"first")
    assert uri == store.uri("models/gate/v1/model.bin")
    assert store.read_bytes("models/gate/v1/model.bin") == b"first"
    store.write_bytes("models/gate/v1/model.bin", b"second")
    assert store.read_bytes("models/gate/v1/model.bin") == b"second"
    assert store.exists("models/gate/v1/model.bin") and store.exists("models/gate")
    assert not store.exists("models/gate/v2")


def test_list_returns_relative_sorted_paths_under_a_prefix(store):
    for path in ("audit/b/2.json", "audit/a/1.json", "models/x.bin"):
        store.write_bytes(path, b"{}")
    assert store.list("audit") == ["audit/a/1.json", "audit/b/2.json"]
    assert store.list() == ["audit/a/1.json", "audit/b/2.json", "models/x.bin"]
    assert store.list("audit/a/1.json") == ["audit/a/1.json"]  # a file prefix lists itself
    assert store.list("nothing") == []


def test_a_fresh_store_on_the_same_root_sees_what_another_wrote(store):
    store.write_bytes("audit/run-1.json", b"signed")
    again = ArtifactStore(root=store.root)
    assert again.read_bytes("audit/run-1.json") == b"signed"


def test_missing_file_raises_file_not_found(store):
    with pytest.raises(FileNotFoundError, match="no artifact"):
        store.read_bytes("models/none.bin")


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b"])
def test_paths_cannot_leave_the_root(store, path):
    with pytest.raises(ValueError):
        store.write_bytes(path, b"x")


def test_local_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    uri = store.write_bytes("audit/enriched_cases/2026-11-18/r.json", b"{}\n")
    assert uri == str(tmp_path / "artifacts" / "audit" / "enriched_cases" / "2026-11-18" / "r.json")
    assert Path(uri).read_bytes() == b"{}\n"
    assert [p.name for p in Path(uri).parent.iterdir()] == ["r.json"]


def test_hidden_temp_files_are_not_listed(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    store.write_bytes("audit/r.json", b"{}")
    (tmp_path / "audit" / ".r.json.abc.tmp").write_bytes(b"half")  # a write in progress
    assert store.list("audit") == ["audit/r.json"]


def test_non_local_uris_keep_their_scheme():
    store = ArtifactStore(root="memory://bucket/prefix")
    assert store.uri("audit/x.json") == "memory:///bucket/prefix/audit/x.json"
    assert not store.is_local
