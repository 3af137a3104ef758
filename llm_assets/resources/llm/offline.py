"""The `offline` backend: in-process `vllm.LLM.chat` with `StructuredOutputsParams`, for large
backfills on a GPU node. `OfflineSession` sends the requests that arrive together to the engine
in one call; `run_offline_batch` is that call, each decoding constrained by its request's schema;
`offline_answers` turns vLLM's outputs into `LLMAnswer`s. vLLM is imported lazily: it is only in
the `gpu` extra.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Callable, Sequence

from llm_assets.resources.llm.types import LLMAnswer, LLMRequest

if TYPE_CHECKING:  # typing only: the resource makes the sessions, this module never imports it
    from llm_assets.resources.llm.resource import LLMResource

log = logging.getLogger(__name__)


class OfflineSession:
    """Requests to in-process vLLM: those sent together go to the engine in one `chat` call.

    `run_batch` answers a list of requests in order (the engine call); it runs in a worker
    thread so the event loop keeps collecting the next wave (re-asks) meanwhile.
    """

    def __init__(self, run_batch: Callable[[list[LLMRequest]], list[LLMAnswer]]):
        self._run_batch = run_batch
        self._pending: list[tuple[LLMRequest, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def __aenter__(self) -> "OfflineSession":
        return self

    async def __aexit__(self, *exc) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def complete(self, request: LLMRequest) -> LLMAnswer:
        answer = asyncio.get_running_loop().create_future()
        self._pending.append((request, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await answer

    async def _flush(self) -> None:
        while self._pending:
            # Let every caller that is ready add its request first: one engine call for the wave.
            waiting = -1
            while waiting != len(self._pending):
                waiting = len(self._pending)
                await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            try:
                answers = await asyncio.to_thread(self._run_batch, [r for r, _ in batch])
            except Exception as exc:  # no engine at all (vLLM missing): the callers raise, clearly
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)


def offline_answers(outputs: Sequence, elapsed_s: float) -> list[LLMAnswer]:
    """`LLMAnswer`s from vLLM `RequestOutput`s, the batch's time shared evenly."""
    per_request = elapsed_s / max(1, len(outputs))
    answers = []
    for o in outputs:
        out = o.outputs[0]
        answers.append(LLMAnswer(text=out.text, finish_reason=out.finish_reason,
                                 prompt_tokens=len(o.prompt_token_ids or []),
                                 completion_tokens=len(out.token_ids or []),
                                 latency_s=round(per_request, 6), attempts=1))
    return answers


def run_offline_batch(owner: LLMResource, requests: list[LLMRequest]) -> list[LLMAnswer]:
    """One `LLM.chat` over all requests, each decoding constrained by its own schema; the engine is
    made on first use and kept by `owner`."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError as exc:
        raise RuntimeError("LLM backend 'offline' needs vLLM: install the 'gpu' extra on a GPU node") from exc
    try:
        if owner._offline_engine is None:
            owner._offline_engine = LLM(model=owner.model)
        params = [SamplingParams(temperature=r.temperature or 0.0, max_tokens=r.max_tokens,
                                 structured_outputs=(StructuredOutputsParams(json=r.json_schema)
                                                     if r.json_schema is not None else None))
                  for r in requests]
        started = time.perf_counter()
        outputs = owner._offline_engine.chat([r.messages for r in requests], params,  # type: ignore[attr-defined]
                                             use_tqdm=False)
        owner._count("attempts", len(requests))
        return offline_answers(outputs, time.perf_counter() - started)
    except Exception as exc:  # an engine failure fails the batch, flagged per request, never dropped
        log.warning("offline LLM batch failed: %s", type(exc).__name__)
        return [LLMAnswer(attempts=1, error_kind="backend_error",
                          error=f"offline engine: {type(exc).__name__}: {exc}"[:500]) for _ in requests]
