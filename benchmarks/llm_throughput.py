"""LLM enrichment throughput against a server with S slots and a fixed latency L per request.

The OpenAI-compatible test server (the stand-in for vLLM) runs in its own process with `--slots S
--latency L`, so its capacity is exactly S / L requests per second, like a vLLM whose batch holds
S sequences. We then measure:

1. `LLMEnricher` over `LLMResource(max_concurrency=S)` enriching N cases in the combined call
   mode, as a ratio to that capacity (goal >= 0.9: the batch is kept full);
2. the HTTP client alone: the same N requests (bodies built up front) sent by one loop at
   concurrency S over pools of 8 connections, once with `httpx.AsyncClient` (what the transport
   uses) and once with the `openai` SDK's `AsyncOpenAI` (its low-level `post`, no typed models,
   its own retries off), each as a ratio to capacity; the transport would take the SDK if it cost
   at most 0.03 of the ratio. The transport itself (`LLMResource.complete`) is shown beside them;
3. the naive orchestration: plain httpx, one request at a time, three calls per case (summarize,
   then classify, then propose actions) on a subset, extrapolated per case; reported as how many
   times faster (1) is per case (goal >= 20x);
4. a slow server: `--slow-slots` slots of `--slow-latency` each, and a client whose request
   timeout is 2.5 x that latency while it starts with 32 requests in flight, far more than the
   server can answer within the timeout. A fresh `LLMResource` (defaults: adaptive concurrency,
   check-in on slow answers) enriches `--slow-cases` cases: no fallback, and the ratio to that
   server's capacity (goal >= 0.8).

Run: `.venv/bin/python benchmarks/llm_throughput.py [--cases 640 --slots 32 --latency 0.2]`.
Prints ratios; asserts nothing (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from llm_assets.llm import prompts  # noqa: E402
from llm_assets.llm.llm_enricher import LLMEnricher, skill_request  # noqa: E402
from llm_assets.lib.redaction import redact  # noqa: E402
from llm_assets.llm.types import BatchStats, CaseContext  # noqa: E402
from llm_assets.resources.llm import LLMRequest, LLMResource  # noqa: E402
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_messages, kb_corpus  # noqa: E402


def sample_cases(n: int) -> list[CaseContext]:
    """N redacted sample cases, each with three KB documents of its label as retrieval context."""
    docs_by_label: dict[str, list[dict]] = {}
    for rows in kb_corpus().values():
        for r in rows:
            docs_by_label.setdefault(r.get("label") or "other", []).append(
                {"doc_id": r["id"], "type": r["type"], "label": r.get("label"), "content": r["content"]})
    messages = [m for m in generate_messages(max(n, 100)) if m.kind == "valid"][:n]
    cases = []
    for i, m in enumerate(messages):
        event = json.loads(m.value)
        docs = docs_by_label[m.label]
        cases.append(CaseContext(
            event_id=event["event_id"], text=redact(event["payload_raw"]).text,
            fields={"source_system": event["source_system"], "partner_id": event["partner_id"]},
            retrieved=[docs[(i + k) % len(docs)] for k in range(3)]))
    return cases


def start_server(slots: int, latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_test_server", "--slots", str(slots), "--latency", str(latency)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"test server did not start: {url!r}")
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def naive_seconds_per_case(url: str, cases: list[CaseContext]) -> float:
    """One request at a time, three skills per case, in order, as a simple script would do."""
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for case in cases:
            for template in prompts.PER_SKILL_TEMPLATES:
                response = client.post("/v1/chat/completions", json={
                    "model": "test-model", "messages": prompts.build_messages(template, case),
                    "response_format": template.response_format(), "temperature": 0.0, "max_tokens": 512})
                response.raise_for_status()
    return (time.perf_counter() - started) / len(cases)


def client_loop_seconds(kind: str, url: str, requests: list[LLMRequest], concurrency: int) -> float:
    """The same requests through a bare loop of `kind` (`httpx` or `openai`): pools of 8
    connections, bodies serialized up front, a semaphore, no retries, the answer's JSON read."""
    headers = {"Content-Type": "application/json"}
    sizes = [min(8, concurrency - start) for start in range(0, concurrency, 8)]

    def pool(n: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))

    async def run() -> float:
        bodies = [json.dumps({"model": "test-model", "messages": r.messages, "response_format": r.response_format(),
                              "temperature": r.temperature, "max_tokens": r.max_tokens}).encode() for r in requests]
        if kind == "openai":
            import openai

            sdks = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY", max_retries=0, http_client=pool(n))
                    for n in sizes]

            async def post(i: int, body: bytes) -> dict:
                response = await sdks[i].post("/chat/completions", cast_to=httpx.Response, content=body,
                                              options={"headers": headers})
                return response.json()

            close = [c.close() for c in sdks]
        else:
            clients = [pool(n) for n in sizes]

            async def post(i: int, body: bytes) -> dict:
                response = await clients[i].post(f"{url}/v1/chat/completions", content=body, headers=headers)
                response.raise_for_status()
                return response.json()

            close = [c.aclose() for c in clients]
        free = list(sizes)
        in_flight = asyncio.Semaphore(concurrency)

        async def send(body: bytes) -> str:
            async with in_flight:
                i = max(range(len(free)), key=free.__getitem__)
                free[i] -= 1
                try:
                    answer = await post(i, body)
                finally:
                    free[i] += 1
                return answer["choices"][0]["message"]["content"]

        await asyncio.gather(*(send(b) for b in bodies[:concurrency]))  # warm: connections, lazy imports
        started = time.perf_counter()
        await asyncio.gather(*(send(b) for b in bodies))
        elapsed = time.perf_counter() - started
        await asyncio.gather(*close)
        return elapsed

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=640)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--naive-cases", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-slots", type=int, default=2)
    parser.add_argument("--slow-latency", type=float, default=1.0)
    parser.add_argument("--slow-cases", type=int, default=80)
    args = parser.parse_args()

    cases = sample_cases(args.cases)
    capacity = args.slots / args.latency
    proc, url = start_server(args.slots, args.latency)
    try:
        llm = LLMResource(backend="server", base_url=url, max_concurrency=args.slots)
        llm.check_health()
        enricher = LLMEnricher(llm)
        enricher(cases[: args.slots])  # warm-up: imports, first connections

        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = enricher(cases)
            elapsed = time.perf_counter() - started
            stats = BatchStats.from_results(results)
            runs.append(elapsed)
            print(f"combined run: {len(cases)} cases in {elapsed:.2f}s = {len(cases) / elapsed:.1f} cases/s, "
                  f"ok {stats.ok}/{stats.cases}, request latency p50 {stats.latency_p50_s:.3f}s "
                  f"p95 {stats.latency_p95_s:.3f}s", flush=True)
        server_stats = httpx.get(f"{url}/_stats").json()

        requests = [skill_request(prompts.ENRICH_CASE, prompts.build_messages(prompts.ENRICH_CASE, c),
                                  max_tokens=512, temperature=0.0) for c in cases]
        clients: dict[str, list[float]] = {"httpx loop": [], "openai SDK loop": [], "LLMResource": []}
        for _ in range(args.repeats):  # interleaved, so load on this machine hits them alike
            clients["httpx loop"].append(client_loop_seconds("httpx", url, requests, args.slots))
            clients["openai SDK loop"].append(client_loop_seconds("openai", url, requests, args.slots))
            started = time.perf_counter()
            answers = llm.complete(requests)
            clients["LLMResource"].append(time.perf_counter() - started)
            assert all(a.ok for a in answers)

        naive_per_case = naive_seconds_per_case(url, cases[: args.naive_cases])
    finally:
        stop_server(proc)

    best, median = min(runs), sorted(runs)[len(runs) // 2]
    print()
    print(f"server capacity S/L = {args.slots}/{args.latency}s = {capacity:.1f} requests/s; "
          f"max requests in flight seen by the server: {server_stats['max_concurrency']} (limit {args.slots})")
    print(f"throughput / capacity (LLMEnricher over LLMResource): best {len(cases) / best / capacity:.3f}, "
          f"median {len(cases) / median / capacity:.3f} (goal >= 0.9)")
    ratios = {name: (len(requests) / min(t) / capacity, len(requests) / sorted(t)[len(t) // 2] / capacity)
              for name, t in clients.items()}
    for name, (b, m) in ratios.items():
        print(f"client alone, {name:<15}: throughput / capacity best {b:.3f}, median {m:.3f}")
    print(f"openai SDK cost vs httpx: {ratios['httpx loop'][1] - ratios['openai SDK loop'][1]:+.3f} of the ratio "
          f"(median; the transport would take the SDK at <= 0.03)")
    print(f"naive sequential, 3 calls per case: {naive_per_case:.3f}s per case ({args.naive_cases} cases)")
    print(f"speed-up vs naive per case: best {naive_per_case * len(cases) / best:.1f}x, "
          f"median {naive_per_case * len(cases) / median:.1f}x (goal >= 20x)")

    slow_server(args)
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def slow_server(args) -> None:
    """Scenario 4: more requests in flight than the server answers within the request timeout."""
    cases = sample_cases(args.slow_cases)
    capacity = args.slow_slots / args.slow_latency
    timeout = 2.5 * args.slow_latency
    proc, url = start_server(args.slow_slots, args.slow_latency)
    try:
        llm = LLMResource(backend="server", base_url=url, request_timeout_s=timeout)  # a fresh limit: 32
        started = time.perf_counter()
        results = LLMEnricher(llm)(cases)
        elapsed = time.perf_counter() - started
        server_stats = httpx.get(f"{url}/_stats").json()
    finally:
        stop_server(proc)
    stats, transport = BatchStats.from_results(results), llm.stats()
    limit = next(iter(transport["concurrency"].values()))
    print()
    print(f"slow server: {args.slow_slots} slots x {args.slow_latency}s = {capacity:.2f} requests/s; client "
          f"timeout {timeout:.2f}s, starting with {llm.max_concurrency} in flight")
    print(f"  {len(cases)} cases in {elapsed:.2f}s: ok {stats.ok}/{stats.cases}, fallbacks {stats.failed}, "
          f"requests sent {transport['attempts']}, retries {transport['retries']}, overload signals "
          f"{transport['overloads']}, concurrency cuts {limit['cuts']} (now {limit['limit']}), breaker opened "
          f"{transport['breaker_times_opened']}x, answers abandoned at the server {server_stats['aborted']}")
    print(f"  throughput / capacity: {len(cases) / elapsed / capacity:.3f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
