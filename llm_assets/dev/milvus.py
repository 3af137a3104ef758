"""A local `milvus-lite server` process: Milvus Lite for several processes at once.

A Milvus Lite *file* admits one process at a time, which breaks Dagster's multiprocess
executor and concurrent runs. The package's own server mode serves many clients over
gRPC and keeps its data in `data_dir` across restarts; the dev and demo commands start
it here and set `MILVUS_URI` to `handle.uri`. It stops on SIGINT.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_assets.dev.process import ManagedProcess, free_port, start_process, stop_all


def milvus_lite_executable() -> str:
    """The `milvus-lite` console script of this interpreter's environment (else on PATH)."""
    beside = Path(sys.executable).parent / "milvus-lite"
    if beside.exists():
        return str(beside)
    found = shutil.which("milvus-lite")
    if not found:
        raise FileNotFoundError("the `milvus-lite` command was not found: install pymilvus[milvus-lite]")
    return found


@dataclass
class MilvusServerHandle:
    """A running `milvus-lite server`; `uri` is what `MILVUS_URI` / `MilvusResource(uri=...)` take."""

    uri: str
    host: str
    port: int
    data_dir: Path
    log_path: Path
    process: ManagedProcess = field(repr=False)

    def is_running(self) -> bool:
        return self.process.is_running()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (its clean shutdown), then SIGKILL if it does not exit within `timeout`."""
        return self.process.stop(timeout)

    def __enter__(self) -> "MilvusServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(uri: str) -> bool:
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=2)
        try:
            client.list_collections()
        finally:
            client.close()
        return True
    except Exception:  # not accepting connections yet
        return False


def start_milvus_server(data_dir: Path | str, port: int | None = None, host: str = "127.0.0.1",
                        startup_timeout: float = 60.0) -> MilvusServerHandle:
    """Start `milvus-lite server --data-dir DATA_DIR --host HOST --port PORT` and wait until it answers."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host=host)
    log_path = data_dir / "milvus-lite-server.log"
    log = log_path.open("ab")
    process = start_process(
        [milvus_lite_executable(), "server", "--data-dir", str(data_dir), "--host", host, "--port", str(port)],
        name="milvus-lite", stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )
    log.close()
    handle = MilvusServerHandle(uri=f"http://{host}:{port}", host=host, port=port, data_dir=data_dir,
                                log_path=log_path, process=process)
    try:
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if not handle.is_running():
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"milvus-lite server exited with {process.process.returncode}:\n{tail}")
            try:
                with socket.create_connection((host, port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            if _answers(handle.uri):
                return handle
            time.sleep(0.2)
        raise TimeoutError(f"milvus-lite server on {handle.uri} did not answer within {startup_timeout} s "
                           f"(log: {log_path})")
    except BaseException:  # Ctrl-C while waiting included: never leave it running
        handle.stop()
        raise
