"""The end-to-end demo: sample events through Kafka and the whole asset graph.

Runs on the Dagster instance in `$DAGSTER_HOME`, so every run, check and metadata plot
the demo produced is there to browse afterwards in `make dev`.
"""

import contextlib
import io
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

from llm_assets import asset_keys as keys
from llm_assets import settings

# Runs log to the instance (browse them in the UI); the terminal shows warnings only.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# What decided an enriched row's content (ARCHITECTURE section 1), in the order the summary shows them.
ROUTES = ("gate", "local", "llm", "fallback")


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str], partition_key: str | None = None):
    result = dg.materialize(
        assets=[*defs.assets, *(defs.asset_checks or [])],
        selection=dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(k) for k in keys]),
        partition_key=partition_key,
        resources=defs.resources,
        instance=instance,
        run_config=QUIET,
        raise_on_error=True,
    )
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    for evaluation in failed:
        print(f"  check {evaluation.asset_check_key.to_user_string()} FAILED ({evaluation.severity.value})")
    return result


SEED_KEYS = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index", "evaluation/golden_cases",
             "models/embedding_gate"]


def seeded(instance: dg.DagsterInstance) -> bool:
    """Whether the seed tables, the KB index, the gate and a production model version are there."""
    return all(instance.get_latest_materialization_event(dg.AssetKey.from_user_string(k)) is not None
               for k in [*SEED_KEYS, "models/production"])


def build_seeds_and_promote(defs: dg.Definitions, instance: dg.DagsterInstance, *, verbose: bool = False) -> None:
    """What the first micro-batch needs, in order: the seed tables, the KB index and the gate, then
    the local model version evaluated on the golden cases (its blocking check) and promoted, so
    every enriched row carries a gate, a KB index and a production model version."""
    from llm_assets.models.commands import promote
    from llm_assets.models.registry import load_registry
    from llm_assets.partitions import model_versions

    _materialize(defs, instance, SEED_KEYS)
    local_version = next(m.name for m in load_registry().values() if m.backend == "local")
    if verbose:
        print(f"   model versions: models/evaluation[{local_version}] on the golden cases, the blocking check "
              "no_regression_vs_production, then models/production")
    instance.add_dynamic_partitions(model_versions.name, [local_version])
    evaluation = _materialize(defs, instance, ["models/evaluation"], partition_key=local_version)
    metrics = {m.metadata["accuracy"].value for m in evaluation.asset_materializations_for_node("models__evaluation")
               if "accuracy" in m.metadata}
    if verbose:
        print(f"  golden accuracy {', '.join(f'{a:.3f}' for a in metrics)}; promoting it:", end=" ", flush=True)
    with contextlib.redirect_stdout(sys.stdout if verbose else io.StringIO()):
        promoted = promote(local_version, instance=instance, delta=defs.resources["delta"], quiet=True) == 0
    if not promoted:
        print(f"  {local_version} not promoted: enrichment keeps the environment's backend")


def run_demo(sample_dir: Path) -> int:
    # The code location reads its environment when imported: after the CLI pointed it at the local services.
    from llm_assets.definitions import defs
    from llm_assets.dev.daemon import drain_topic
    from llm_assets.dev.samples import produce_sample_messages
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.dev.dev_command import pack_has_sample_events
    from llm_assets.domain import current_pack
    from llm_assets.domain.packs.payments_ops.sample_data.generator import load_messages

    if not pack_has_sample_events():
        print(f"make demo produces the payments sample events, and the domain pack is {current_pack().version}: "
              "unset LLM_ASSETS_DOMAIN for the demo, or run `make dev` and produce your own events", file=sys.stderr)
        return 2
    started = time.perf_counter()
    instance = dg.DagsterInstance.get()
    messages = load_messages(sample_dir)
    ingest_settings = defs.resources["kafka_ingest"]
    produce_sample_messages(defs.resources["kafka"], ingest_settings.topic, messages)
    print(f"produced {len(messages)} messages to {ingest_settings.topic}")

    print(f"1/4 the domain pack {current_pack().version}: entity signals, exceptions, kb/documents, kb/index, "
          "evaluation/golden_cases, embedding gate")
    build_seeds_and_promote(defs, instance, verbose=True)

    print("2/4 micro-batches: kafka_events_sensor ticks -> one run per batch: raw -> curated -> enriched")
    ingest = drain_topic(instance, {k: defs.resources[k] for k in ("kafka", "kafka_ingest", "delta")}, defs=defs,
                         quiet=True)
    print(f"  {ingest['ticks']} sensor ticks, runs {ingest['runs']}, failed {len(ingest['failed_run_keys'])}; "
          f"last tick: {ingest['skip_reason']}")

    delta: DeltaLakeStorage = defs.resources["delta"]
    days = sorted(delta.read(keys.RAW_EVENTS).get_column("event_date").unique().to_list())
    print(f"3/4 automation's pass over {len(days)} days ({', '.join(days)}): curated and enriched are incremental,"
          " so days the micro-batches already covered enrich nothing again")
    for day in days:
        result = _materialize(defs, instance, ["curated/cases", "enriched/cases"], partition_key=day)
        written = [m.metadata.get("cases_written") for m in result.asset_materializations_for_node("enriched__cases")]
        print(f"  {day}: enriched cases written by this pass: "
              f"{sum(int(w.value) for w in written if w is not None)}")

    print("4/4 summary")
    print_summary(delta, days)
    print(f"done in {time.perf_counter() - started:.0f} s; browse it with `make dev` (http://127.0.0.1:3000)")
    return 0


def route_summary(enriched: pl.DataFrame, days: list[str]) -> list[str]:
    """Lines: rows per day and route (every route, zeros included), and the share served from the cache."""
    lines = [f"    {'event_date':<12}" + "".join(f"{r:>10}" for r in ROUTES)]
    counts = enriched.group_by("event_date", "route").len()
    by_day_route = {(d, r): n for d, r, n in counts.iter_rows()}
    for day in days:
        lines.append(f"    {day:<12}" + "".join(f"{by_day_route.get((day, r), 0):>10}" for r in ROUTES))
    others = sorted(set(enriched["route"].drop_nulls().unique().to_list()) - set(ROUTES))
    if others:
        lines.append(f"    other routes: {', '.join(others)}")
    if "served_from_cache" in enriched.columns and enriched.height:
        cached = int(enriched["served_from_cache"].fill_null(False).sum())
        lines.append(f"    served from the result cache: {cached} of {enriched.height} ({cached / enriched.height:.0%})")
    return lines


def print_summary(delta, days: list[str]) -> None:
    raw = delta.read(keys.RAW_EVENTS)
    rejected = delta.read(keys.REJECTED_EVENTS)
    curated = delta.read(keys.CURATED_CASES)
    enriched = delta.read(keys.ENRICHED_CASES)
    print(f"  {'table':<28}{'rows':>8}")
    for name, df in [("raw/events", raw), ("raw/rejected_events", rejected),
                     ("features/entity_signals", delta.read(keys.ENTITY_SIGNALS)),
                     ("signals/exceptions", delta.read(keys.EXCEPTIONS)),
                     ("kb/documents", delta.read(keys.KB_DOCUMENTS)),
                     ("curated/cases", curated), ("enriched/cases", enriched)]:
        print(f"  {name:<28}{df.height:>8}")
    if rejected.height:
        reasons = rejected.select(pl.col("error").str.replace_all(r"\d+", "N").str.slice(0, 60).alias("reason"))
        print("  rejected by reason:")
        for r in reasons.group_by("reason").len().sort("len", descending=True).to_dicts():
            print(f"    {r['len']:>5}  {r['reason']}")
    if enriched.height:
        print("  enriched per day and route:")
        for line in route_summary(enriched, days):
            print(line)
        print("  labels: " + ", ".join(f"{r['label']}={r['len']}"
                                       for r in enriched.group_by("label").len().sort("label").to_dicts()))
        for v in enriched.select("model_version", "prompt_version", "kb_index_version").unique().to_dicts():
            print(f"  versions: model {v['model_version']}, prompt {v['prompt_version']}, "
                  f"kb index {v['kb_index_version']}")
        audited = enriched.filter(pl.col("audit_source").is_not_null()).height if "audit_source" in enriched.columns else 0
        shut = (sorted(set(delta.read(keys.GATE_SHUTOFFS)["label"].to_list()))
                if delta.exists(keys.GATE_SHUTOFFS) else [])
        print(f"  the gate on live traffic: {audited} gated cases audited by the LLM"
              + ("" if audited else " (with LLM_BASE_URL set, 5% of gated cases are)")
              + f"; labels shut off: {', '.join(shut) or 'none'} (monitoring/gate_precision)")
        flagged = enriched.filter(pl.col("injection_suspected")).height if "injection_suspected" in enriched.columns else 0
        print(f"  trust: {flagged} case(s) whose text tries to instruct the model (injection_suspected: never "
              f"taught to the gate); analysts log in on the rating page (`llm-assets analysts add NAME`, or make dev's "
              f"local-analyst link) and their ratings are weighed (evaluation/quality_metrics)")
    bundles = sorted(settings.audit_dir().rglob("*.json"))
    print(f"  audit bundles: {len(bundles)} under {settings.audit_dir()} "
          f"(verify: python -m llm_assets.cli verify-audit PATH)")
