"""`llm-assets models list|add-partition|promote|rollback`: the registry and promotions from a shell.

Promotions run `models/production` through the Dagster instance (`DAGSTER_HOME`), so they are
recorded like a UI launch and pass the same guard (the version's latest
`no_regression_vs_production` evaluation must have passed).
"""

import dagster as dg

from llm_assets.models import production
from llm_assets.models.assets import latest_check_evaluation, models_production
from llm_assets.models.registry import RegistryError, load_registry, resolve_endpoint
from llm_assets.partitions import model_versions


def _delta():
    from llm_assets.resources.environments import current_environment, resources_for

    return resources_for(current_environment())["delta"]


def list_versions(registry_path: str | None = None, instance: dg.DagsterInstance | None = None) -> int:
    """Print each registered version: backend, model, endpoint (set or not), partition, check, production."""
    registry = load_registry(registry_path)
    instance = instance or dg.DagsterInstance.get()
    partitions = set(instance.get_dynamic_partitions(model_versions.name))
    state = production.current_production(_delta())
    print(f"{'version':34} {'backend':8} {'model':34} {'endpoint':24} {'partition':9} {'check':7} production")
    for name, model in registry.items():
        endpoint = model.endpoint or "-"
        if model.backend == "server":
            endpoint += " (set)" if resolve_endpoint(model) else " (unset)"
        evaluation = latest_check_evaluation(instance, name)
        check = "-" if evaluation is None else ("passed" if evaluation[0] else "FAILED")
        serving = ""
        if name == state.version:
            serving = f"yes ({state.rollout_share:.0%})"
        elif name == state.previous_version:
            serving = f"previous ({1 - state.rollout_share:.0%})"
        print(f"{name:34} {model.backend:8} {(model.model or '(rules + gate)'):34} {endpoint:24} "
              f"{'yes' if name in partitions else 'no':9} {check:7} {serving}")
    return 0


def add_partition(name: str, registry_path: str | None = None, instance: dg.DagsterInstance | None = None) -> int:
    """Add the `models/evaluation` partition of a registered version (the sensor does it every minute)."""
    if name not in load_registry(registry_path):
        print(f"{name} is not in the registry")
        return 1
    (instance or dg.DagsterInstance.get()).add_dynamic_partitions(model_versions.name, [name])
    print(f"models/evaluation partition {name} added")
    return 0


def promote(name: str, share: float = 1.0, note: str = "", registry_path: str | None = None,
            instance: dg.DagsterInstance | None = None, delta=None, quiet: bool = False) -> int:
    """Materialize `models/production` for `name` at `share`; 0 when promoted, 1 when refused.
    `quiet`: the run logs warnings only to the console (the instance keeps every event)."""
    delta = delta or _delta()
    config = {"version": name, "rollout_share": share, "note": note, "registry_path": registry_path or ""}
    run_config = {"ops": {"models__production": {"config": config}}}
    if quiet:
        run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
    result = dg.materialize([models_production], instance=instance or dg.DagsterInstance.get(),
                            resources={"delta": delta}, run_config=run_config, raise_on_error=False)
    state = production.current_production(delta)
    if not result.success:
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
        message = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error \
            else "the run failed"
        print(message)
        return 1
    print(f"production: {state.version} at {state.rollout_share:.0%}"
          + (f", the rest on {state.previous_version}" if state.previous_version and state.rollout_share < 1 else ""))
    return 0


def rollback(to: str | None = None, registry_path: str | None = None, instance: dg.DagsterInstance | None = None,
             delta=None) -> int:
    """Promote an earlier version again (by default the latest one before the current version), fully."""
    delta = delta or _delta()
    target = to or production.rollback_target(production.history(delta))
    if target is None:
        print("nothing to roll back to: no earlier production version")
        return 1
    return promote(target, 1.0, note="rollback", registry_path=registry_path, instance=instance, delta=delta)


def run(args) -> int:
    try:
        if args.models_command == "list":
            return list_versions(args.registry)
        if args.models_command == "add-partition":
            return add_partition(args.name, args.registry)
        if args.models_command == "promote":
            return promote(args.name, args.share, args.note, args.registry)
        return rollback(args.to, args.registry)
    except RegistryError as exc:
        print(f"registry error: {exc}")
        return 2
