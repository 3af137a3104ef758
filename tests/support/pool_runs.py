"""One run of one step in the `llm` pool, as its own process (what a run worker is).

`tests/test_pools.py` launches two at once against one DAGSTER_HOME. The first step to start
holds the pool's slot until the other run is queued on the pool (or a bound passes), and
records whether it saw that; the other one just runs. Two runs in threads of one process
would share its stdout/stderr capture, which Dagster does not support.

    DAGSTER_HOME=... POOL_TEST_MARKERS=DIR python -m tests.support.pool_runs
"""

import os
import sys
import time
from pathlib import Path

import dagster as dg

POOL = "llm"
# Only a bound on the wait, never an assertion: the order of events decides. The first step
# stops waiting as soon as the other run queues on the pool or its step starts (limit broken).
WAIT_BOUND_S = 480


def _claim_first(markers: Path) -> bool:
    try:
        os.close(os.open(markers / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


@dg.asset(pool=POOL)
def llm_work(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Stands for an LLM step: holds the pool's slot while another run would like it."""
    markers = Path(os.environ["POOL_TEST_MARKERS"])
    first = _claim_first(markers)
    if not first:
        (markers / "second_started").touch()
    saw_other_run_waiting = False
    deadline = time.monotonic() + WAIT_BOUND_S
    while first and time.monotonic() < deadline and not (markers / "second_started").exists():
        waiting = context.instance.event_log_storage.get_concurrency_info(POOL).pending_run_ids
        saw_other_run_waiting = bool(waiting - {context.run_id})
        if saw_other_run_waiting:
            break
        time.sleep(0.5)  # light polling: the other run must get the CPU to queue up
    return dg.MaterializeResult(metadata={"first": first, "saw_other_run_waiting": saw_other_run_waiting})


if __name__ == "__main__":
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([llm_work], instance=instance)
    print(result.run_id)
    sys.exit(0 if result.success else 1)
