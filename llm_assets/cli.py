"""`llm-assets` command line: the demo, the dev environment, sample data, audit verification.

    python -m llm_assets.cli demo            # whole graph end to end on the embedded defaults
    python -m llm_assets.cli dev             # Dagster UI + daemon on 127.0.0.1:3000 with local services
    python -m llm_assets.cli verify-audit PATH_OR_URI
    python -m llm_assets.cli sample-data [--events N]
    python -m llm_assets.cli rating-page [--host 127.0.0.1] [--port 8765]
    python -m llm_assets.cli models list|add-partition NAME|promote NAME [--share 0.25]|rollback [--to NAME]
    python -m llm_assets.cli domain init DIR|check [DIR]
    python -m llm_assets.cli analysts add NAME [--replace]|revoke NAME|release NAME|list
"""

import argparse
import os
import signal
import sys


def demo(args: argparse.Namespace) -> int:
    from llm_assets.dev.demo import run_demo
    from llm_assets.dev.dev_command import ensure_sample_data, local_services, prepare_dagster_home

    prepare_dagster_home()
    sample_dir = ensure_sample_data(args.events)
    with local_services():
        return run_demo(sample_dir)


def dev(args: argparse.Namespace) -> int:
    from llm_assets.dev.dev_command import run_dev

    code = run_dev(port=args.port, events=args.events, interval_s=args.interval, broker_port=args.broker_port,
                   set_up=not args.skip_setup)
    # Every process it started is stopped by now. A live-stream publish stuck on the stopped broker
    # (a daemon thread inside librdkafka's flush) must not hold the exit past the 10 s promise.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def verify_audit(args: argparse.Namespace) -> int:
    from llm_assets.enrichment.audit_verification import verify_command
    from llm_assets.settings import artifact_root, delta_root

    return verify_command(args.path or artifact_root(), delta_root=args.delta_root or delta_root())


def sample_data(args: argparse.Namespace) -> int:
    from llm_assets.dev.dev_command import ensure_sample_data

    ensure_sample_data(args.events)
    return 0


def rating_page(args: argparse.Namespace) -> int:
    from llm_assets.evaluation.rating_app import serve_rating_page

    serve_rating_page(host=args.host, port=args.port)
    return 0


def models(args: argparse.Namespace) -> int:
    from llm_assets.models.commands import run

    return run(args)


def analysts(args: argparse.Namespace) -> int:
    from llm_assets.evaluation.analysts import AnalystRegistry
    from llm_assets.resources.environments import current_environment, resources_for

    registry = AnalystRegistry(resources_for(current_environment())["artifacts"].process_config_and_initialize())
    try:
        if args.analysts_command == "add":
            token = registry.add(args.name, replace=args.replace)
            print(f"analyst {args.name}: token {token}\n(shown once, only its hash is kept; log in on the rating "
                  f"page's /login, or send it as `Authorization: Bearer ...`)")
        elif args.analysts_command == "revoke":
            registry.revoke(args.name)
            print(f"analyst {args.name}: token revoked")
        elif args.analysts_command == "release":
            when = registry.release(args.name)
            print(f"analyst {args.name}: ratings up to {when} reviewed and trusted again")
        else:
            for a in registry.accounts(fresh=True).values():
                state = f"revoked {a.revoked_at}" if a.revoked_at else "active"
                print(f"{a.name}\t{state}\tcreated {a.created_at}\treviewed {a.released_at or '-'}")
    except (KeyError, ValueError) as exc:
        print(f"llm-assets analysts: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def domain(args: argparse.Namespace) -> int:
    from llm_assets.domain.commands import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    from llm_assets.dev.quiet import ignore_known_preview_warnings

    ignore_known_preview_warnings()
    # pymilvus's gRPC keepalive pings make milvus-lite's server log GOAWAY lines: harmless noise.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    # SIGTERM (CI, `timeout`, a supervisor) unwinds like Ctrl-C, so the broker, Milvus and dagster dev stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = build_parser().parse_args(argv)
    return args.func(args)


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of `llm-assets` (the docs test checks what the docs name against it)."""
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
    p.add_argument("--broker-port", type=int, default=9092,
                   help="the local broker's port (another free one when taken); outside producers connect there")
    p.add_argument("--skip-setup", action="store_true",
                   help="start without building the seeds and promoting the local model version first")
    p.set_defaults(func=dev)
    p = sub.add_parser("verify-audit", help="verify the signed audit bundles, the manifest of each date and that "
                                            "every enriched row is vouched for by a bundle")
    p.add_argument("path", metavar="PATH_OR_URI", nargs="?", default=None,
                   help="a bundle file, a folder of bundles, a date's folder or an artifact root "
                        "(default ARTIFACT_ROOT, e.g. s3://...)")
    p.add_argument("--delta-root", default=None,
                   help="the Delta tables whose manifest and rows are checked (default DELTA_ROOT)")
    p.set_defaults(func=verify_audit)
    p = sub.add_parser("sample-data", help="(re)generate the seeded sample data set")
    p.add_argument("--events", type=int, default=3000)
    p.set_defaults(func=sample_data)
    p = sub.add_parser("rating-page", help="the analysts' rating page (ratings go to Kafka cases.ratings)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=rating_page)
    p = sub.add_parser("analysts", help="analyst accounts of the rating page: tokens, revocation, reviews")
    analysts_sub = p.add_subparsers(dest="analysts_command", required=True)
    a = analysts_sub.add_parser("add", help="a new analyst; prints their token once")
    a.add_argument("name")
    a.add_argument("--replace", action="store_true", help="a new token for an existing analyst")
    a = analysts_sub.add_parser("revoke", help="end an analyst's token now")
    a.add_argument("name")
    a = analysts_sub.add_parser("release", help="lift a quarantine: the analyst's ratings so far were reviewed")
    a.add_argument("name")
    analysts_sub.add_parser("list", help="accounts, their state and last review")
    p.set_defaults(func=analysts)
    p = sub.add_parser("models", help="model registry, evaluation partitions, promotion and rollback")
    p.add_argument("--registry", default=None, help="registry YAML (default llm_assets/models/registry.yaml)")
    models_sub = p.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="registered versions, their check and which one serves")
    m = models_sub.add_parser("add-partition", help="add the models/evaluation partition of a registered version")
    m.add_argument("name")
    m = models_sub.add_parser("promote", help="promote a version whose no_regression_vs_production check passed")
    m.add_argument("name")
    m.add_argument("--share", type=float, default=1.0, help="rollout share of cases (by a hash of event_id)")
    m.add_argument("--note", default="")
    m = models_sub.add_parser("rollback", help="promote an earlier production version again")
    m.add_argument("--to", default=None, help="the version (default: the one before the current)")
    p.set_defaults(func=models)
    p = sub.add_parser("domain", help="domain packs: write a commented skeleton, validate a pack and its sources")
    domain_sub = p.add_subparsers(dest="domain_command", required=True)
    d = domain_sub.add_parser("init", help="write a skeleton pack into a new or empty folder")
    d.add_argument("dir", metavar="DIR")
    d = domain_sub.add_parser("check", help="validate a pack and its sources and print what it declares")
    d.add_argument("dir", metavar="DIR", nargs="?", default=None,
                   help="the pack folder (default: the pack LLM_ASSETS_DOMAIN selects)")
    p.set_defaults(func=domain)
    return parser


if __name__ == "__main__":
    sys.exit(main())
