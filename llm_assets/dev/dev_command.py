"""`make dev` / `python -m llm_assets.cli dev`: the Dagster UI and daemon with local services.

Starts tansu and `milvus-lite server` on 127.0.0.1 (unless the environment points at
others), publishes the sample events, starts the live sample stream and `dagster dev`,
and supervises them until Ctrl-C or SIGTERM. Every process runs in a session of its own
(ARCHITECTURE section 8: a background `dagster dev` ignores a terminal's signals otherwise),
so shutdown is ours to do, all at once: SIGINT to every process group, a few seconds'
grace, then SIGKILL to whatever is left (descendants that left their group included) and
reaping, so no process, zombie or port outlives the command.

Quiet unless something is wrong: `dagster dev`'s own output goes to a log file in
`$DAGSTER_HOME` and is shown only when it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from llm_assets import settings
from llm_assets.dev.process import ManagedProcess, free_port, start_process, stop_all
from llm_assets.dev.quiet import pythonwarnings

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_TOPIC_PARTITIONS = 3
# SIGINT to SIGKILL: `dagster dev` stops its webserver, daemon and code server in about 6 s here.
SHUTDOWN_GRACE_S = 6.0
UI_START_TIMEOUT_S = 180.0
SERVICE_CHECK_S = 2.0  # how often `make dev` looks for a local service that died


def prepare_dagster_home() -> Path:
    """`$DAGSTER_HOME` (default `$LLM_ASSETS_HOME/dagster_home`) with the repository's `dagster.yaml`."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.llm_assets_home() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


SAMPLE_DAYS = 3  # the seeded events cover the last three UTC days, today included


def ensure_sample_data(n_events: int, *, quiet: bool = False) -> Path:
    """The seeded sample data set under `SAMPLE_DATA_DIR`, (re)generated, its events dated over the
    last `SAMPLE_DAYS` days (the same events every time but for their dates): inside automation's
    and `evaluation/samples`' lookback, so the demo and `make dev` have samples to rate at once."""
    from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data

    out = settings.sample_data_dir()
    today = datetime.now(timezone.utc).date()
    counts = generate_sample_data(out, n_events=n_events, start_date=today - timedelta(days=SAMPLE_DAYS - 1),
                                  days=SAMPLE_DAYS)
    if not quiet:
        print(f"sample data in {out}: {counts['events']} Kafka messages, "
              f"{counts['kb/resolved_cases']} resolved KB cases")
    return out


def pack_has_sample_events() -> bool:
    """The sample generator invents payments cases: only the shipped payments pack gets its events
    (another pack's events come from the team's own producers, or its tests)."""
    from llm_assets.domain import current_pack
    from llm_assets.domain.pack import DEFAULT_PACK, PACKS_DIR

    return current_pack().root == (PACKS_DIR / DEFAULT_PACK).resolve()


TOPICS = {settings.EVENTS_TOPIC: EVENTS_TOPIC_PARTITIONS, settings.ENRICHED_TOPIC: EVENTS_TOPIC_PARTITIONS,
          settings.RATINGS_TOPIC: 1}


@dataclass
class LocalServices:
    """The local services this command started (None: the environment points at others)."""

    broker: object | None = None   # dev.broker.BrokerProcess
    milvus: object | None = None   # dev.milvus.MilvusServerHandle
    processes: list[ManagedProcess] = field(default_factory=list)

    def restart_dead(self) -> list[str]:
        """Start again, on the same port (and Milvus on the same data folder), a service that died;
        returns a line per restart. A dead broker's messages are gone (memory storage): the topics
        are created again at once and the sensor reads the new log from its start."""
        from llm_assets.dev.broker import create_topics, start_broker
        from llm_assets.dev.milvus import start_milvus_server

        said = []
        if self.broker is not None and not self.broker.is_running():
            self._replace(self.broker.process, (broker := start_broker(self.broker.port)).process)
            self.broker = broker
            create_topics(broker.bootstrap, TOPICS)
            said.append(f"tansu on {broker.bootstrap} had stopped: restarted (memory storage: what it held and "
                        f"no one had ingested is gone)")
        if self.milvus is not None and not self.milvus.is_running():
            milvus = start_milvus_server(self.milvus.data_dir, port=self.milvus.port)
            self._replace(self.milvus.process, milvus.process)
            self.milvus = milvus
            said.append(f"milvus-lite server on {milvus.uri} had stopped: restarted on the same data folder")
        return said

    def _replace(self, old: ManagedProcess, new: ManagedProcess) -> None:
        self.processes[:] = [new if p is old else p for p in self.processes]


@contextlib.contextmanager
def local_services(processes: list[ManagedProcess] | None = None, *, quiet: bool = False,
                   broker_port: int = 9092) -> Iterator[LocalServices]:
    """tansu and `milvus-lite server` on 127.0.0.1 unless the environment points elsewhere.

    Sets `KAFKA_BOOTSTRAP_SERVERS` and `MILVUS_URI` for this process and its children and
    creates the topics first thing (tansu would auto-create a topic a producer names, with 4
    partitions). With `processes`, the started services are appended to it and the caller
    stops them (together with its own); otherwise they stop when the block ends.
    """
    from llm_assets.dev.broker import create_topics, start_broker
    from llm_assets.dev.milvus import start_milvus_server

    started: list[ManagedProcess] = [] if processes is None else processes
    services = LocalServices(processes=started)
    try:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            services.broker = start_broker(free_port(broker_port))
            started.append(services.broker.process)
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = services.broker.bootstrap
            if not quiet:
                print(f"tansu broker on {services.broker.bootstrap} (memory storage)")
        create_topics(os.environ["KAFKA_BOOTSTRAP_SERVERS"], TOPICS)  # before anything can produce
        if "MILVUS_URI" not in os.environ:
            services.milvus = start_milvus_server(settings.llm_assets_home() / "milvus_server", port=free_port(19530))
            started.append(services.milvus.process)
            os.environ["MILVUS_URI"] = services.milvus.uri
            if not quiet:
                print(f"milvus-lite server on {services.milvus.uri}")
        yield services
    finally:
        if processes is None:
            stop_all(started)


CANCEL_WAIT_S = 3.0  # at Ctrl-C, how long the runs in flight get to end as canceled before everything stops


def _first_run_end(instance, run_id: str) -> str | None:
    """The run's first PIPELINE_SUCCESS / PIPELINE_FAILURE event in its log (the run's own verdict;
    a failure reported from outside comes after it), or None."""
    import dagster as dg

    ends = (dg.DagsterEventType.RUN_SUCCESS.value, dg.DagsterEventType.RUN_FAILURE.value)
    return next((r.dagster_event.event_type_value for r in instance.all_logs(run_id)
                 if r.dagster_event is not None and r.dagster_event.event_type_value in ends), None)


def cancel_runs_in_flight(timeout_s: float = CANCEL_WAIT_S, report: Path | None = None) -> list[str]:
    """Cancel every queued or running run of the instance in `$DAGSTER_HOME` (through its run
    coordinator: a running one is marked CANCELING at once and terminated by its code server, and
    recorded as CANCELED, not failed) and wait up to `timeout_s` for the executing ones to end; one
    still canceling then is marked CANCELED, as run monitoring does after its cancel timeout. Returns
    their ids. kafka_events_sensor requests a canceled batch again at once on the next start.

    Dagster's termination reads the run, then writes its CANCELING event: a run that succeeds in
    between gets CANCELING after its success, and its code server, seeing the process gone while
    the run is not finished, marks it failed. Such a run (its own log holds its success) gets its
    SUCCESS status back, with a message saying why. What happened to each run is appended to
    `report` (`dev-stop.log` in the Dagster home): the console stays quiet at Ctrl-C."""
    import dagster as dg

    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
    lines = []
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=active))
        for run in runs:
            try:  # a run that just ended, a code server going away
                requested = instance.run_coordinator.cancel_run(run.run_id)
                lines.append(f"run {run.run_id} ({run.status.value}): cancel {'requested' if requested else 'refused'}")
            except Exception as exc:
                lines.append(f"run {run.run_id} ({run.status.value}): cancel failed: {exc!r}")
        ids = [run.run_id for run in runs]
        # Only a run already executing can end by itself; one whose process is still starting cannot
        # answer before the stack stops, so it is not waited for.
        executing = [run.run_id for run in runs if run.status == dg.DagsterRunStatus.STARTED]
        deadline = time.monotonic() + timeout_s
        while executing and time.monotonic() < deadline:
            time.sleep(0.2)
            executing = [r.run_id for r in instance.get_runs(
                filters=dg.RunsFilter(run_ids=executing, statuses=[*active, dg.DagsterRunStatus.CANCELING]))]
        pending = [r.run_id for r in instance.get_runs(
            filters=dg.RunsFilter(run_ids=ids, statuses=[*active, dg.DagsterRunStatus.CANCELING]))] if ids else []
        # What Dagster's run monitoring does after its cancel timeout: a run still CANCELING is marked
        # CANCELED before its process stops with the stack (else the code server, seeing the process
        # gone while the run is not finished, records it as failed).
        canceling = instance.get_runs(filters=dg.RunsFilter(
            run_ids=pending, statuses=[dg.DagsterRunStatus.CANCELING])) if pending else []
        for run in canceling:
            instance.report_run_canceled(run, "make dev stopped: the run had not ended its cancel; its process "
                                              "stops with the stack")
            lines.append(f"run {run.run_id}: still canceling, marked canceled")
        marked = {run.run_id for run in canceling}
        lines += [f"run {run_id}: not canceling, stopped with the stack" for run_id in pending if run_id not in marked]
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=ids)) if ids else []:
            if run.status != dg.DagsterRunStatus.SUCCESS and \
                    _first_run_end(instance, run.run_id) == dg.DagsterEventType.RUN_SUCCESS.value:
                instance.report_dagster_event(dg.DagsterEvent(
                    event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name,
                    message="The run had succeeded when make dev's cancel request was recorded: its "
                            f"{run.status.value} status came after its success, which stands."), run.run_id)
                lines.append(f"run {run.run_id}: had succeeded before the cancel was recorded, "
                             f"{run.status.value} -> SUCCESS")
    if report is not None:
        append_stop_log(report, lines)
    return ids


def append_stop_log(path: Path, lines: list[str]) -> None:
    """Append time-stamped lines to `dev-stop.log` (what a stop did; the console stays quiet)."""
    if lines:
        with path.open("a") as out:
            out.write("".join(f"{datetime.now(timezone.utc).isoformat()} {line}\n" for line in lines))


def broker_spool() -> Path:
    """Where `make dev` keeps the events a stopping dev broker held that no run had ingested yet."""
    return settings.llm_assets_home() / "broker_spool" / f"{settings.EVENTS_TOPIC}.jsonl"


def _ui_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_dagster_dev(port: int, home: Path) -> tuple[ManagedProcess, Path]:
    """`dagster dev` on 127.0.0.1:`port` in a session of its own; its output goes to a log file."""
    log_path = home / "dagster-dev.log"
    env = {**os.environ, "PYTHONWARNINGS": pythonwarnings(),  # the preview APIs we chose, not every warning
           # Hugging Face's progress bars ("Loading weights" per embedding-model load in each run) are
           # for a terminal; in this log file they are noise.
           "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    with log_path.open("w") as log:
        process = start_process(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
             "-w", str(REPO_ROOT / "workspace.yaml"), "--log-level", "warning"],
            name="dagster dev", cwd=home,  # not the repository: its dagster.yaml would shadow DAGSTER_HOME's
            env=env, stdout=log, stderr=log)
    return process, log_path


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def set_up_once() -> None:
    """Before the first micro-batch of a new home: the seed tables, the KB index and the gate, then
    the local model version evaluated and promoted (`dev.demo.build_seeds_and_promote`), as runs of
    the instance the UI shows. Later starts find them done and skip it."""
    import dagster as dg

    from llm_assets.dev.demo import build_seeds_and_promote, seeded

    with dg.DagsterInstance.get() as instance:
        if seeded(instance):
            return
        # The code location reads its environment when imported: after local_services pointed it here.
        from llm_assets.definitions import defs

        print("first start: building the seed tables, the KB index and the gate, then evaluating and promoting "
              "the local model version (a few minutes; the UI follows)", flush=True)
        build_seeds_and_promote(defs, instance)


LOCAL_ANALYST = "local-analyst"


def local_analyst_token() -> str:
    """A fresh token for the local analyst (the previous one ends): `make dev`'s one-click login."""
    from llm_assets.evaluation.analysts import AnalystRegistry
    from llm_assets.resources.artifacts import ArtifactStore

    return AnalystRegistry(ArtifactStore(root=settings.artifact_root())).add(LOCAL_ANALYST, replace=True)


def run_dev(port: int = 3000, events: int = 3000, interval_s: float = 15.0, broker_port: int = 9092,
            set_up: bool = True) -> int:
    """Run until Ctrl-C or SIGTERM (or until `dagster dev` exits); returns the exit code."""
    from llm_assets.dev.samples import LiveSampleStream, produce_sample_messages
    from llm_assets.domain.packs.payments_ops.sample_data.generator import load_messages

    from llm_assets.dev.broker import replay_spool, spool_unconsumed

    home = prepare_dagster_home()
    processes: list[ManagedProcess] = []
    stream: LiveSampleStream | None = None
    services: LocalServices | None = None
    try:
        samples = pack_has_sample_events()
        sample_dir = ensure_sample_data(events, quiet=True) if samples else None
        with local_services(processes, quiet=True, broker_port=broker_port) as services:
            bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
            if services.broker is not None:  # what the last stop kept: acknowledged, not yet ingested
                replayed = replay_spool(bootstrap, settings.EVENTS_TOPIC, broker_spool())
                if replayed:
                    print(f"{replayed} event(s) the broker held at the last stop produced again", flush=True)
            if set_up:  # no micro-batch before the KB index, the gate and a production version exist
                set_up_once()
            if samples:
                produce_sample_messages(bootstrap, settings.EVENTS_TOPIC, load_messages(sample_dir))
                stream = LiveSampleStream(bootstrap, settings.EVENTS_TOPIC, interval_s).start()
            else:
                from llm_assets.domain import current_pack
                print(f"domain pack {current_pack().version}: no sample events (the generator writes payments "
                      f"cases); produce your events to {settings.EVENTS_TOPIC}", flush=True)
            dagster, log_path = start_dagster_dev(port, home)
            processes.append(dagster)
            import dagster as _dagster  # noqa: F401  (now, not in the seconds a Ctrl-C has to cancel runs)
            rating_port = free_port(8765)
            login = f"http://127.0.0.1:{rating_port}/login?token={local_analyst_token()}"
            with (home / "rating-page.log").open("w") as rating_log:
                processes.append(start_process(
                    [sys.executable, "-m", "llm_assets.cli", "rating-page", "--host", "127.0.0.1",
                     "--port", str(rating_port)], name="rating page", cwd=REPO_ROOT,
                    env={**os.environ, "PYTHONWARNINGS": pythonwarnings()}, stdout=rating_log, stderr=rating_log))
            deadline, ready, next_check = time.monotonic() + UI_START_TIMEOUT_S, False, 0.0
            while dagster.is_running():
                if time.monotonic() >= next_check:  # a local service that died is started again
                    next_check = time.monotonic() + SERVICE_CHECK_S
                    for line in services.restart_dead():
                        print(line, file=sys.stderr, flush=True)
                if not ready and _ui_answers(port):
                    ready = True
                    print(f"Dagster UI on http://127.0.0.1:{port} (logs: {log_path}); rating page on "
                          f"http://127.0.0.1:{rating_port} (log in as {LOCAL_ANALYST}: {login}); Kafka on "
                          f"{bootstrap}; Ctrl-C stops everything", flush=True)
                elif not ready and time.monotonic() > deadline:
                    print(f"the Dagster UI did not answer within {UI_START_TIMEOUT_S:.0f} s; the end of "
                          f"{log_path}:\n{_log_tail(log_path)}", file=sys.stderr, flush=True)
                    deadline = float("inf")
                time.sleep(0.2)
            print(f"dagster dev exited with code {dagster.process.returncode}; the end of {log_path}:\n"
                  f"{_log_tail(log_path)}", file=sys.stderr)
            return dagster.process.returncode or 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # SIGTERM (see cli.main)
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        # Shutdown must finish: a second Ctrl-C (or SIGTERM) must not leave half of it undone.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        phases, started = [], time.monotonic()

        def phase(name: str) -> None:
            phases.append(f"{name} {time.monotonic() - started:.1f}s")

        try:
            if stream is not None:  # while the broker still runs, so its last publish completes quietly
                stream.stop(timeout_s=2.0)
                phase("stream")
            if any(p.name == "dagster dev" and p.is_running() for p in processes):
                with contextlib.suppress(Exception):  # an instance that cannot be read: stop anyway
                    cancel_runs_in_flight(report=home / "dev-stop.log")
                phase("runs")
            if services is not None and services.broker is not None and services.broker.is_running():
                with contextlib.suppress(Exception):  # a broker that does not answer has nothing to keep
                    spool_unconsumed(services.broker.bootstrap, settings.EVENTS_TOPIC, settings.CONSUMER_GROUP,
                                     broker_spool())
                phase("spool")
                # At once: a message an outside producer gets acknowledged after the spool read is lost
                # with the broker's memory (a window of the signal's delivery).
                services.broker.stop(SHUTDOWN_GRACE_S)
                phase("broker")
            # Whatever needs SIGKILL after the grace period gets it silently: a slow shutdown of a
            # local dev stack is not the user's problem (the daemon fails a run it left behind).
            killed = stop_all(processes, SHUTDOWN_GRACE_S)
            phase("processes" + (f" (killed: {', '.join(killed)})" if killed else ""))
            with contextlib.suppress(OSError):  # the stop's timings, for a slow stop's reader
                append_stop_log(home / "dev-stop.log", [f"stopped: {', '.join(phases)}"])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
