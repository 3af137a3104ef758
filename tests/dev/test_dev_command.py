"""`make dev` stops on Ctrl-C and SIGTERM with nothing left behind: no process, no zombie, no port.

Starts the real dev command (tansu, `milvus-lite server`, the live sample stream, `dagster dev`
with its webserver, daemon and code server) on a temporary LLM_ASSETS_HOME and free ports,
waits until the UI answers, signals it as a terminal or a supervisor would, and checks that
every process it started is gone and every port it listened on can be bound again.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llm_assets.dev.process import descendants, free_port, port_is_free

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN_S = 10  # the promise of `make dev`: Ctrl-C and everything is gone within 10 s


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _listening_ports(pids: list[int]) -> set[int]:
    """TCP ports in LISTEN state owned by `pids` (Linux /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (FileNotFoundError, PermissionError):
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _ui_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.e2e  # the real `llm-assets dev`: tansu, milvus-lite server, `dagster dev`
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_dev_stops_on_a_signal_and_leaves_no_process_or_port(tmp_path, how):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MILVUS_URI", "DAGSTER_HOME")}
    env.update(LLM_ASSETS_HOME=str(tmp_path / "home"), SAMPLE_DATA_DIR=str(tmp_path / "samples"))
    log = (tmp_path / "dev.log").open("w")
    pids: list[int] = []
    dev = subprocess.Popen([sys.executable, "-m", "llm_assets.cli", "dev", "--port", str(port), "--events", "200",
                            "--interval", "1", "--skip-setup"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # its own process group, like a shell's foreground job
    try:
        ready = f"Dagster UI on http://127.0.0.1:{port}"  # printed once the UI answers
        deadline = time.monotonic() + 300
        while ready not in (tmp_path / "dev.log").read_text():
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, "the UI never answered"
            time.sleep(1)
        assert _ui_answers(port)
        pids += [dev.pid, *descendants(dev.pid)]
        ports = _listening_ports(pids)
        # The UI, tansu and milvus-lite at least (the code server listens on a unix socket).
        assert port in ports and len(ports) >= 3, ports

        if how == "ctrl-c":
            os.killpg(dev.pid, signal.SIGINT)  # what a terminal sends to its foreground job
        else:
            dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=STOP_WITHIN_S)

        assert [p for p in pids if _alive(p)] == []
        assert [p for p in sorted(ports) if not port_is_free(p)] == []
        output = (tmp_path / "dev.log").read_text()
        assert output.startswith(ready) and len(output.strip().splitlines()) == 1, output  # quiet: that one line
    finally:
        # A failed stop must not leave the stack running through the rest of the suite: `dagster dev`
        # runs in a session of its own, out of reach of the process group.
        for pid in [dev.pid, *pids, *descendants(dev.pid)]:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        dev.wait()
        log.close()


@pytest.mark.integration  # a Python child process and a `sleep`, no stack
def test_processes_started_with_sigint_ignored_still_stop_on_sigint():
    """A job a non-interactive shell starts in the background (`bash .ci/run &`) begins with SIGINT
    ignored, and its children would inherit that: `stop_all`'s SIGINT must still stop them."""
    script = ("from llm_assets.dev.process import start_process, stop_all; "
              "print(stop_all([start_process(['sleep', '60'], name='sleep')], 10.0))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out  # stopped by SIGINT, none needed SIGKILL
