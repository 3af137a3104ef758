"""Stopping the local services this project starts (tansu, `milvus-lite server`)."""

import signal
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
