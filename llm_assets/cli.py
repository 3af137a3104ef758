"""`llm-assets` command line: the demo, the dev environment, sample data, audit verification.

    python -m llm_assets.cli demo            # whole graph end to end on the embedded defaults
    python -m llm_assets.cli dev             # Dagster UI + daemon on 127.0.0.1:3000 with local services
    python -m llm_assets.cli verify-audit PATH
    python -m llm_assets.cli sample-data [--events N]
"""

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from llm_assets import settings
from llm_assets.local_process import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_TOPIC_PARTITIONS = 3



def _prepare_dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or settings.llm_assets_home() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _ensure_sample_data(n_events: int) -> Path:
    from llm_assets.sample_data.generator import generate_sample_data

    out = settings.sample_data_dir()
    counts = generate_sample_data(out, n_events=n_events)
    print(f"sample data in {out}: {counts['events']} Kafka messages, {counts['kb/resolved_cases']} resolved KB cases")
    return out


@contextlib.contextmanager
def local_services():
    """tansu and `milvus-lite server` on 127.0.0.1 unless the environment points elsewhere."""
    from llm_assets.local_broker import create_topics, start_broker
    from llm_assets.local_milvus import start_milvus_server

    stack = contextlib.ExitStack()
    with stack:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            broker = start_broker(free_port(9092))
            stack.callback(broker.stop)
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
            print(f"tansu broker on {broker.bootstrap} (memory storage)")
        if "MILVUS_URI" not in os.environ:
            milvus = start_milvus_server(settings.llm_assets_home() / "milvus_server", port=free_port(19530))
            stack.callback(milvus.stop)
            os.environ["MILVUS_URI"] = milvus.uri
            print(f"milvus-lite server on {milvus.uri}")
        create_topics(os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                      {settings.EVENTS_TOPIC: EVENTS_TOPIC_PARTITIONS, settings.ENRICHED_TOPIC: EVENTS_TOPIC_PARTITIONS})
        yield


def demo(args: argparse.Namespace) -> int:
    from llm_assets.demo import run_demo

    _prepare_dagster_home()
    sample_dir = _ensure_sample_data(args.events)
    with local_services():
        return run_demo(sample_dir)


def _generate_live_events(stop: threading.Event, interval_s: float) -> None:
    """Sample events stamped now, a small batch every `interval_s`, for the dev sensor."""
    from datetime import datetime, timezone

    from llm_assets.ingest.local_runner import produce_sample_messages
    from llm_assets.sample_data.generator import generate_messages

    batch = 0
    while not stop.wait(interval_s):
        batch += 1
        today = datetime.now(timezone.utc).date()
        messages = generate_messages(20, seed=10_000 + batch, start_date=today, days=1)
        # A live stream is mostly clean: one malformed message every fifth batch.
        malformed = [m for m in messages if m.kind.startswith("malformed")][: int(batch % 5 == 0)]
        messages = [m for m in messages if not m.kind.startswith("malformed")] + malformed
        # Fresh ids per batch so the live stream never collides with the demo's events.
        renamed = []
        for m in messages:
            value = m.value.replace(b'"evt-', f'"live{batch}-'.encode())
            key = m.key.replace(b"evt-", f"live{batch}-".encode()) if m.key else None
            renamed.append(type(m)(key, value, m.kind, m.pii, m.label))
        produce_sample_messages(os.environ["KAFKA_BOOTSTRAP_SERVERS"], settings.EVENTS_TOPIC, renamed)


def dev(args: argparse.Namespace) -> int:
    home = _prepare_dagster_home()
    sample_dir = _ensure_sample_data(args.events)
    with local_services():
        from llm_assets.ingest.local_runner import produce_sample_messages
        from llm_assets.sample_data.generator import load_messages

        produce_sample_messages(os.environ["KAFKA_BOOTSTRAP_SERVERS"], settings.EVENTS_TOPIC, load_messages(sample_dir))
        stop = threading.Event()
        generator = threading.Thread(target=_generate_live_events, args=(stop, args.interval), daemon=True)
        generator.start()
        print(f"Dagster UI on http://127.0.0.1:{args.port} (DAGSTER_HOME={home}); Ctrl-C stops everything")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(args.port),
             "-w", str(REPO_ROOT / "workspace.yaml")],
            cwd=REPO_ROOT, start_new_session=True,
        )
        try:
            return proc.wait()
        except (KeyboardInterrupt, SystemExit):
            return 0
        finally:
            stop.set()
            if proc.poll() is None:  # dagster dev stops its webserver and daemon on SIGINT
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def verify_audit(args: argparse.Namespace) -> int:
    from llm_assets.enrichment.audit import verify_command

    return verify_command(args.path)


def sample_data(args: argparse.Namespace) -> int:
    _ensure_sample_data(args.events)
    return 0


def main(argv: list[str] | None = None) -> int:
    # pymilvus's gRPC keepalive pings make milvus-lite's server log GOAWAY lines: harmless noise.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    # SIGTERM (CI, `timeout`, a supervisor) unwinds like Ctrl-C, so the broker, Milvus and dagster dev stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(prog="llm-assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the whole graph end to end on the embedded defaults")
    p.add_argument("--events", type=int, default=3000)
    p.set_defaults(func=demo)
    p = sub.add_parser("dev", help="Dagster UI and daemon with a local broker and event generator")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--interval", type=float, default=15.0, help="seconds between live sample batches")
    p.set_defaults(func=dev)
    p = sub.add_parser("verify-audit", help="verify a signed audit bundle and list the cases it covers")
    p.add_argument("path")
    p.set_defaults(func=verify_audit)
    p = sub.add_parser("sample-data", help="(re)generate the seeded sample data set")
    p.add_argument("--events", type=int, default=3000)
    p.set_defaults(func=sample_data)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
