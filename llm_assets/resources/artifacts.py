"""`ArtifactStore`: files that later runs need (trained models, signed audit bundles), under one root URI.

Under `K8sRunLauncher` every run is a fresh pod, so nothing a later run reads may live on
the pod's disk. The store keeps artifacts under `root`: a local folder by default
(`$LLM_ASSETS_HOME/artifacts`), `s3://`, `gs://` or `az://` in production (through fsspec;
the image then needs the matching filesystem package, e.g. `s3fs`). Paths are relative,
`/`-separated and never leave the root. Generic: it knows bytes and paths, not what they hold.
"""

import os
import posixpath
from pathlib import Path

import dagster as dg
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field, PrivateAttr

from llm_assets.storage.files import atomic_write_bytes


def relative_artifact_path(path: str) -> str:
    """`path` checked and normalized: relative, `/`-separated, no `.`/`..`/empty parts; `""` is the root."""
    text = str(path).strip()
    if not text:
        return ""
    if text.startswith("/") or "\\" in text:
        raise ValueError(f"artifact path {path!r} must be relative to the store's root and use '/'")
    parts = text.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"artifact path {path!r} has an empty, '.' or '..' part")
    return "/".join(parts)


class ArtifactStore(dg.ConfigurableResource):
    """Artifacts (model files, audit bundles) under `root`, read and written as bytes.

    Writes are atomic: on a local folder a temp file is renamed into place; on an object
    store one PUT is all or nothing. Readers therefore see a whole old or a whole new file.
    """

    root: str = Field(description="ARTIFACT_ROOT: a local folder, or s3://bucket/prefix, gs://..., az://...")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="passed to the fsspec filesystem (credentials, endpoint, ...)")

    _fs: object = PrivateAttr(default=None)
    _base: str = PrivateAttr(default="")

    def _filesystem(self):
        if self._fs is None:
            fs, base = url_to_fs(self.root, **self.storage_options)
            if isinstance(fs, LocalFileSystem):
                base = os.path.normpath(base)
            self._fs, self._base = fs, base.rstrip("/") or "/"
        return self._fs, self._base

    def _full(self, path: str) -> str:
        _, base = self._filesystem()
        relative = relative_artifact_path(path)
        if not relative:
            return base
        return f"{base}/{relative}" if base != "/" else f"/{relative}"

    @property
    def is_local(self) -> bool:
        return isinstance(self._filesystem()[0], LocalFileSystem)

    def uri(self, path: str = "") -> str:
        """Where `path` lives: a local path for a folder root, `s3://...` (etc.) otherwise."""
        fs, _ = self._filesystem()
        full = self._full(path)
        return full if self.is_local else fs.unstrip_protocol(full)

    def write_bytes(self, path: str, data: bytes) -> str:
        """Write `data` at `path` atomically, replacing any previous file; returns its URI."""
        if not relative_artifact_path(path):
            raise ValueError("cannot write over the artifact root itself")
        fs, _ = self._filesystem()
        full = self._full(path)
        if self.is_local:
            Path(full).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(Path(full), data)
        else:
            fs.pipe_file(full, data)
        return self.uri(path)

    def read_bytes(self, path: str) -> bytes:
        """The bytes at `path`; `FileNotFoundError` when there is no such file."""
        fs, _ = self._filesystem()
        full = self._full(path)
        if not fs.isfile(full):
            raise FileNotFoundError(f"no artifact at {self.uri(path)}")
        return fs.cat_file(full)

    def delete(self, path: str) -> None:
        """Remove the file at `path` (nothing when there is none)."""
        fs, _ = self._filesystem()
        full = self._full(path)
        if fs.isfile(full):
            fs.rm_file(full)

    def exists(self, path: str) -> bool:
        fs, _ = self._filesystem()
        if not self.is_local:
            fs.invalidate_cache()  # other pods write too: never answer from a stale listing
        return fs.exists(self._full(path))

    def list(self, prefix: str = "") -> list[str]:
        """Paths (relative to the root, sorted) of the files under `prefix`; a file prefix lists itself.

        Hidden names (a leading `.`: temp files of writes in progress) are left out.
        """
        fs, base = self._filesystem()
        target = self._full(prefix)
        if not self.is_local:
            fs.invalidate_cache()
        if not fs.exists(target):
            return []
        found = []
        for name in fs.find(target):
            name = os.path.normpath(name) if self.is_local else name
            if posixpath.basename(name).startswith("."):
                continue
            if name == base:
                found.append("")
            elif name.startswith(base.rstrip("/") + "/"):
                found.append(name[len(base.rstrip("/")) + 1:])
        return sorted(found)
