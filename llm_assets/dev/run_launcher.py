"""`LocalRunLauncher`: Dagster's default launcher, plus a health check so run monitoring sees a dead run.

Dagster's `DefaultRunLauncher` (a run = a process started by the code server) cannot tell whether
a run's process is alive, so a run whose process was killed (`kill -9`, the OOM killer, a laptop
that slept through a restart of `make dev`) stays STARTED for ever: it holds the Kafka sensor's
single run slot, nothing retries it and its batch is never committed. This launcher answers
run monitoring's health check from the process id the run recorded when it started (the
"Started process for run (pid: N)" engine event): a process that is gone, a zombie, or a newer
process under the same id means the run died, and the daemon marks it failed; run retries then
re-execute it from the failed step (`dagster.yaml`). Production runs on Kubernetes, whose
launcher has its own health check.

Decision (ARCHITECTURE section 9): `CheckRunHealthResult` and `WorkerStatus` are not exported by
`dagster`; they are the launcher API this subclass implements.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

STARTED_PROCESS_MESSAGE = "Started process for run (pid: "


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_state(pid: int, started_by: float) -> str:
    """`alive`, or why not: `gone`, `zombie`, `reused` (a process younger than `started_by`, a Unix time)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.parent.exists() and not Path("/proc/self").exists():  # no procfs (macOS): signal 0 only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return "alive"
        return "alive"
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "gone"
    if fields[0] in ("Z", "X"):
        return "zombie"
    boot = _boot_time()
    if boot is not None:
        started_at = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if started_at > started_by + 2.0:  # clock ticks are coarse; a newer process took the id
            return "reused"
    return "alive"


class LocalRunLauncher(dg.DefaultRunLauncher):
    """The default launcher with a run-worker health check (see the module docstring)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        records = self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        started = [r for r in records if r.dagster_event is not None
                   and (r.dagster_event.message or "").startswith(STARTED_PROCESS_MESSAGE)]
        if not started:  # not started yet (run monitoring's start timeout covers a run stuck there)
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run process recorded yet")
        record = started[-1]  # a resumed or re-launched run records a new process
        pid_value = record.dagster_event.engine_event_data.metadata.get("pid")
        try:
            pid = int(pid_value.value if pid_value is not None else "")
        except ValueError:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run's process id was not recorded")
        state = process_state(pid, record.timestamp)
        if state == "alive":
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run process {pid} is alive", run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run process {pid} is {state}: it died without ending "
                                                         f"the run (killed, out of memory, or its instance stopped)",
                                    run_worker_id=str(pid))
