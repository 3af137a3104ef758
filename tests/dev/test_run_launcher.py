"""`LocalRunLauncher` tells run monitoring whether a run's process is alive, from the process id the
run recorded: a run whose process died (its code server gone too, as after a hard stop of `make dev`)
is reported failed, so the daemon fails it and run retries take over."""

from __future__ import annotations

import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.events import EngineEventData  # test-only: how a run worker records its pid
from dagster._core.launcher import WorkerStatus

from llm_assets.dev.run_launcher import LocalRunLauncher, process_state

pytestmark = pytest.mark.integration


def _instance_with_launcher(tmp_path) -> dg.DagsterInstance:
    (tmp_path / "dagster.yaml").write_text("run_launcher:\n  module: llm_assets.dev.run_launcher\n"
                                           "  class: LocalRunLauncher\n")
    return dg.DagsterInstance.from_config(str(tmp_path))


def _started_run(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    run = instance.add_run(dg.DagsterRun(job_name="ingest_events_job", run_id=f"run-{pid}",
                                         status=dg.DagsterRunStatus.STARTED))
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
    return run


def test_a_run_whose_process_is_gone_is_reported_failed_and_a_live_one_running(tmp_path):
    instance = _instance_with_launcher(tmp_path)
    launcher = instance.run_launcher
    assert isinstance(launcher, LocalRunLauncher) and launcher.supports_check_run_worker_health

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)  # the recorded event comes after the process started, as a run worker's does
    run = _started_run(instance, worker.pid)
    try:
        alive = launcher.check_run_worker_health(run)
        assert alive.status == WorkerStatus.RUNNING and f"run process {worker.pid} is alive" in alive.msg
        worker.kill()
        # the signal is delivered asynchronously: the process becomes a zombie a moment later
        deadline = time.monotonic() + 10
        while process_state(worker.pid, started_by=time.time()) == "alive" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert launcher.check_run_worker_health(run).status == WorkerStatus.FAILED  # a zombie: dead
        worker.wait()
        dead = launcher.check_run_worker_health(run)
        assert dead.status == WorkerStatus.FAILED and f"run process {worker.pid} is gone" in dead.msg
    finally:
        worker.kill()
        instance.dispose()


def test_a_process_id_taken_by_a_newer_process_is_not_the_run():
    own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        assert process_state(own.pid, started_by=time.time()) == "alive"
        assert process_state(own.pid, started_by=time.time() - 3600) == "reused"  # recorded long before it began
    finally:
        own.kill()
        own.wait()
