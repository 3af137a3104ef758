"""Ports and shutdown of the local services this project starts (tansu, `milvus-lite server`)."""

import signal
import socket
import subprocess


def interrupt_and_wait(process: subprocess.Popen, timeout_s: float) -> int | None:
    """SIGINT (the services' clean shutdown), then SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when nothing listens on it, else a port the OS reports free (bind to port 0)."""
    if preferred:
        with socket.socket() as probe:
            if probe.connect_ex((host, preferred)) != 0:
                return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
