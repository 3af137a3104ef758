"""Ports, process trees and shutdown of the local processes the dev tooling starts.

Every long-lived process (tansu, `milvus-lite server`, `dagster dev`) is started in a session
of its own (`start_new_session=True`): a Ctrl-C in the terminal then reaches only the
supervising Python process, which stops them in parallel (SIGINT to each group, a short
grace period, then SIGKILL to whatever is left, descendants that left the group included)
and reaps them, so nothing outlives the command and no zombie stays behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when nothing listens on it, else a port the OS reports free (bind to port 0)."""
    if preferred:
        with socket.socket() as probe:
            if probe.connect_ex((host, preferred)) != 0:
                return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on `port` and it can be bound again."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_children() -> dict[int, list[int]]:
    """One snapshot of the process tree (Linux `/proc`): parent pid -> child pids.

    It reads every process's `stat`: on a busy machine one snapshot costs a good part of a
    second, so shutdown takes one per round for all its processes, not one per process.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below `pid`, whatever its process group or session (`children`: a snapshot
    from `process_children()`, taken now when None)."""
    children = process_children() if children is None else children
    found, stack = [], list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack += children.get(child, [])
    return found


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ManagedProcess:
    """A process started in its own session; `stop()` ends it and everything it started."""

    process: subprocess.Popen
    name: str
    _known: set[int] = field(default_factory=set, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def remember_descendants(self, children: dict[int, list[int]] | None = None) -> None:
        """Note the current descendants, so they are found even after their parent died."""
        if self.is_running():
            self._known.update(descendants(self.pid, children))

    def interrupt(self, children: dict[int, list[int]] | None = None) -> None:
        """SIGINT to the whole group: what a terminal's Ctrl-C would have sent it."""
        self.remember_descendants(children)
        if self.is_running():
            _signal_group(self.pid, signal.SIGINT)

    def leftovers(self, children: dict[int, list[int]] | None = None) -> list[int]:
        pids = ([self.pid] if self.is_running() else []) + sorted(self._known | set(descendants(self.pid, children)))
        return [p for p in dict.fromkeys(pids) if _alive(p)]

    def send_kill(self, children: dict[int, list[int]] | None = None) -> None:
        """SIGKILL to the group and to every remembered descendant still alive (no waiting)."""
        self.remember_descendants(children)
        _signal_group(self.pid, signal.SIGKILL)
        for pid in self.leftovers(children):
            _signal_pid(pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL to the group and to every remembered descendant still alive, then reap."""
        self.send_kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace_s: float = 5.0) -> int | None:
        stop_all([self], grace_s)
        try:  # its group is gone; reap the parent itself, which may still be exiting
            return self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            return self.process.returncode


def children_stop_on_sigint() -> None:
    """Let the processes started from here stop on the SIGINT that `stop_all` sends them.

    A job that a non-interactive shell starts in the background (`cmd &` in a script, some CI
    runners) begins with SIGINT ignored, and exec keeps an ignored signal ignored: `dagster dev`
    and the services would then never see our SIGINT and be killed after the grace period (and a
    Ctrl-C test would fail). With Python's own handler in this process, every child starts with
    the default action instead. Only the main thread may set a handler; elsewhere nothing changes.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_process(args: Sequence[str], *, name: str, **popen_kwargs) -> ManagedProcess:
    """`subprocess.Popen(args, start_new_session=True, ...)` as a `ManagedProcess` that stops on SIGINT."""
    children_stop_on_sigint()
    popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
    return ManagedProcess(subprocess.Popen(list(args), start_new_session=True, **popen_kwargs), name)


def stop_all(processes: Sequence[ManagedProcess], grace_s: float = 5.0) -> list[str]:
    """Stop processes together: SIGINT to every group, wait up to `grace_s`, SIGKILL the rest.

    Returns the names of those that had to be killed. Total time is about `grace_s` whatever
    the number of processes (they shut down in parallel).
    """
    children = process_children()
    for proc in processes:
        proc.interrupt(children)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        children = process_children()
        if not any(p.leftovers(children) for p in processes):
            break
        for proc in processes:
            proc.process.poll()  # reap the parent as soon as it exits
        time.sleep(0.05)
    children = process_children()
    stubborn = [proc for proc in processes if proc.leftovers(children)]
    for proc in stubborn:  # all at once, then reap: a killed process goes in milliseconds
        proc.send_kill(children)
    reap_by = time.monotonic() + 5
    for proc in processes:
        try:
            proc.process.wait(timeout=max(0.0, reap_by - time.monotonic()) if proc in stubborn else 0)
        except subprocess.TimeoutExpired:
            pass
    return [proc.name for proc in stubborn]

