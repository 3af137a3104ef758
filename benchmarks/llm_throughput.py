"""LLM enrichment throughput against a server with S slots and a fixed latency L per request.

The OpenAI-compatible test server (the stand-in for vLLM) runs in its own process with `--slots S
--latency L`, so its capacity is exactly S / L requests per second, like a vLLM whose batch holds
S sequences. We then measure:

1. `LLMResource(backend="server", call_mode="combined", max_concurrency=S)` enriching N cases,
   as a ratio to that capacity (goal >= 0.9: the batch is kept full);
2. the naive orchestration: plain httpx, one request at a time, three calls per case (summarize,
   then classify, then propose actions) on a subset, extrapolated per case; reported as how many
   times faster (1) is per case (goal >= 20x).

Run: `.venv/bin/python benchmarks/llm_throughput.py [--cases 640 --slots 32 --latency 0.2]`.
Prints ratios; asserts nothing (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from llm_assets.enrichment import prompts  # noqa: E402
from llm_assets.enrichment.redaction import redact  # noqa: E402
from llm_assets.enrichment.types import BatchStats, CaseContext  # noqa: E402
from llm_assets.resources.llm import LLMResource  # noqa: E402
from llm_assets.sample_data.generator import generate_messages, kb_corpus  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=640)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--naive-cases", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cases = sample_cases(args.cases)
    capacity = args.slots / args.latency
    proc, url = start_server(args.slots, args.latency)
    try:
        llm = LLMResource(backend="server", base_url=url, call_mode="combined", max_concurrency=args.slots)
        llm.check_health()
        llm.run_cases(cases[: args.slots])  # warm-up: imports, first connections

        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = llm.run_cases(cases)
            elapsed = time.perf_counter() - started
            stats = BatchStats.from_results(results)
            runs.append((elapsed, stats))
            print(f"combined run: {len(cases)} cases in {elapsed:.2f}s = {len(cases) / elapsed:.1f} cases/s, "
                  f"ok {stats.ok}/{stats.cases}, request latency p50 {stats.latency_p50_s:.3f}s "
                  f"p95 {stats.latency_p95_s:.3f}s", flush=True)
        best_elapsed, _ = min(runs, key=lambda r: r[0])
        median_elapsed = sorted(r[0] for r in runs)[len(runs) // 2]
        server_stats = httpx.get(f"{url}/_stats").json()

        naive_per_case = naive_seconds_per_case(url, cases[: args.naive_cases])
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    best_rate, median_rate = len(cases) / best_elapsed, len(cases) / median_elapsed
    print()
    print(f"server capacity S/L = {args.slots}/{args.latency}s = {capacity:.1f} requests/s; "
          f"max requests in flight seen by the server: {server_stats['max_concurrency']} (limit {args.slots})")
    print(f"throughput / capacity: best {best_rate / capacity:.3f}, median {median_rate / capacity:.3f} "
          f"(goal >= 0.9)")
    print(f"naive sequential, 3 calls per case: {naive_per_case:.3f}s per case ({args.naive_cases} cases)")
    print(f"speed-up vs naive per case: best {naive_per_case * best_rate:.1f}x, "
          f"median {naive_per_case * median_rate:.1f}x (goal >= 20x)")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
