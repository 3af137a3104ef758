"""Fail points: named places in a micro-batch where a crash test kills the run process.

`hit(name)` does nothing unless `LLM_ASSETS_FAILPOINTS` names a folder that holds a file called
`name`. Then the first process to reach the point removes that file (an atomic claim: exactly
one run dies per armed point) and sends itself SIGKILL, as the kernel's OOM killer or a node
drain would: no `finally`, no flush, no handler runs. The crash tests arm a point, let the
stack recover on its own and check that nothing was lost or doubled; production never sets
the variable. (The idea of FoundationDB's and TiKV's fail points, reduced to what a test of
whole processes needs: a file per point, no library.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from llm_assets.settings import FAILPOINTS_VARIABLE, failpoints_dir

__all__ = ["FAILPOINTS_VARIABLE", "arm", "hit"]

# The points of the hot path, in the order a micro-batch reaches them.
BEFORE_RAW_WRITE = "ingest.before_raw_write"
AFTER_RAW_WRITE = "ingest.after_raw_write"
AFTER_CURATED_WRITE = "curated.after_write"
AFTER_ENRICHED_WRITE = "enriched.after_write"
AFTER_AUDIT_BUNDLE = "enriched.after_audit_bundle"
AFTER_AUDIT_RECORD = "enriched.after_audit_record"
AFTER_PUBLISH = "enriched.after_publish"
HOT_PATH = (BEFORE_RAW_WRITE, AFTER_RAW_WRITE, AFTER_CURATED_WRITE, AFTER_ENRICHED_WRITE, AFTER_AUDIT_BUNDLE,
            AFTER_AUDIT_RECORD, AFTER_PUBLISH)


def arm(folder: str | Path, name: str) -> Path:
    """Arm `name` in `folder` (the next process that reaches it dies)."""
    if name not in HOT_PATH:
        raise ValueError(f"unknown fail point {name!r}; known: {', '.join(HOT_PATH)}")
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("armed\n")
    return path


def hit(name: str) -> None:
    """Die here (SIGKILL) if `name` is armed; otherwise return at once."""
    folder = failpoints_dir()
    if folder is None:
        return
    try:
        os.remove(os.path.join(folder, name))
    except FileNotFoundError:
        return  # not armed, or another process claimed it
    os.kill(os.getpid(), signal.SIGKILL)
