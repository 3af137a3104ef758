"""`run_blocking`: a coroutine run to its end from blocking code, on a fresh event loop (in a
worker thread when the caller already runs a loop, as notebooks do)."""

from __future__ import annotations

import asyncio
import threading
from typing import Coroutine, TypeVar

T = TypeVar("T")


def run_blocking(coro: Coroutine[object, object, T]) -> T:
    """Run `coro` on a fresh event loop, also when the caller already runs one (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="llm-transport-loop")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
