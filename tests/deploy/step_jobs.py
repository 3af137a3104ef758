"""Stand-ins with the keys of the heavy assets, run under the production executor by tests/deploy.

The executor picks each step's pod by op name (`enriched__cases`, `kb__index`), so these small
assets get exactly the pods the real ones would, and run in seconds. Loaded by the test and again
by each step's process (the command of the step's Kubernetes Job), with the same environment.
"""

import os

import dagster as dg

from llm_assets.asset_keys import ENRICHED_CASES, KB_INDEX
from llm_assets.execution import executor_for


def _ran_here() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"pid": os.getpid(), "step_key": os.environ.get("DAGSTER_RUN_STEP_KEY", "")})


@dg.asset(key=KB_INDEX)
def kb_index_stand_in() -> dg.MaterializeResult:
    return _ran_here()


@dg.asset(key=ENRICHED_CASES, deps=[KB_INDEX])
def enriched_cases_stand_in() -> dg.MaterializeResult:
    return _ran_here()


@dg.asset(key=["deploy_test", "plain_step"])
def plain_step() -> dg.MaterializeResult:
    return _ran_here()


defs = dg.Definitions(
    assets=[kb_index_stand_in, enriched_cases_stand_in, plain_step],
    jobs=[dg.define_asset_job("k8s_steps_job", executor_def=executor_for("prod"))],
)


def k8s_steps_job() -> dg.JobDefinition:
    """The job, for `dg.reconstructable` (a module-level function is what a step process re-imports)."""
    return defs.resolve_job_def("k8s_steps_job")
