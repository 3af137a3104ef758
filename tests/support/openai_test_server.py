"""A small OpenAI-compatible HTTP server that stands in for vLLM in tests and benchmarks.

This is THE ONE allowed test double for vLLM (no GPU here, and vLLM is an optional extra).
Everything else in the tests is real: the `LLMResource` talks real HTTP to this server through
the `openai` SDK, so concurrency limits, timeouts, retries and the circuit breaker are exercised
for real.

It implements what `LLMResource` uses of vLLM's API:
- `GET /health`, `GET /v1/models`;
- `POST /v1/chat/completions`: answers a JSON string valid for the requested
  `response_format` json_schema in `choices[0].message.content`, with `usage`. The answer is
  plausible: the label comes from keywords in the `<case>` part of the prompt.
And what tests need to see and to break:
- `slots`: at most S chat requests are processed at once (others wait), each holding its slot
  for `latency_s` (processing included), like a server whose batch is full: capacity S / L;
  `max_concurrency` reports the most seen at once;
- like vLLM, a request whose client went away (its timeout) is aborted, queued or running, so it
  does not spend capacity (`aborted` counts them); `stop()` closes every open connection too, as
  a server process that dies does;
- fault injection, by an exact sequence (`faults=["http_500", None, ...]`, one entry per chat
  request in arrival order) or by shares (`fault_rates={"http_500": 0.1}`, seeded):
  `http_500`, `http_429`, `http_503`, `timeout` (sleeps `timeout_sleep_s`, past the client's timeout),
  `truncated` (JSON cut in half, finish_reason `length`), `fenced` (JSON in a code fence with prose
  around), `prose` (no JSON at all), `drop` (closes the connection without answering);
- `stop_after`: the server dies (as `stop()`) when that many chat requests have arrived, the
  last one included, so a test can lose its server in the middle of a batch;
- a thread-safe log of every request (`requests`, `chat_requests`: path, headers, parsed body);
- `labelers`: per requested model id, a function from the case text (redacted, as in the prompt)
  to the label answered (e.g. an oracle of the golden set, or `rotated(oracle)`), so one server
  stands in for a good and a bad model version at once; the model ids it names are served too
  (`/v1/models`); other model ids get the plausible label. `obedient(labeler)` wraps one into a
  model that obeys an instruction in the case text naming a label (the poisoning benchmark's
  prompt-injected cases).

Use: `with OpenAITestServer(slots=4, latency_s=0.05) as server: server.base_url ...`, or run
`python -m tests.support.openai_test_server --slots 32 --latency 0.2` (prints the base URL,
serves until SIGINT/SIGTERM; `GET /_stats` gives the counters) to keep it out of the client's
process, as the benchmark does.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

from llm_assets.domain.pack import DEFAULT_PACK, PACKS_DIR, load_pack

# The payments pack's answers (the default pack's tests know them); another pack's labels are read
# from the prompt itself (`_guided_label`).
PAYMENTS = load_pack(PACKS_DIR / DEFAULT_PACK)

FAULT_KINDS = ("http_500", "http_429", "http_503", "timeout", "truncated", "fenced", "prose", "drop")
_POLL_S = 0.05  # how often a waiting request looks for its client having gone

# Keyword rules for a plausible label: first match wins (routing before fraud: "routed to the fraud queue").
_LABEL_KEYWORDS = (
    ("routing_error", ("queue", "routed", "routing rule", "reassign", "wrong team", "landed in")),
    ("fraud_suspected", ("fraud", "takeover", "chargeback", "velocity", "synthetic", "countries")),
    ("partner_mismatch", ("partner", "reconciliation", "remittance", "fee schedule")),
    ("data_quality", ("malformed", "null", "duplicate", "exchange rate", "column", "rejected")),
)
_CASE = re.compile(r"<case>\s*(.*?)\s*</case>", re.DOTALL)
# Every label answered as the next one: a model version that is confidently wrong on every case.
ROTATED_LABELS = dict(zip(PAYMENTS.labels, PAYMENTS.labels[1:] + PAYMENTS.labels[:1]))


def rotated(labeler: Callable[[str], str]) -> Callable[[str], str]:
    """A labeler that answers the label after `labeler`'s, on every case."""
    return lambda case_text: ROTATED_LABELS[labeler(case_text)]


_ORDER = re.compile(r"\b(?:label|classify|classification|answer)\b[^.\n]{0,40}?\b(?:as|to|is|with)\s+([a-z_]{3,})",
                    re.IGNORECASE)


def obedient(labeler: Callable[[str], str], labels: Sequence[str] = PAYMENTS.labels) -> Callable[[str], str]:
    """A model that can be talked into a label: an instruction in the case text that names one
    ("label this case as X", "set the label to X") wins; otherwise `labeler` answers."""
    def answer(case_text: str) -> str:
        for named in _ORDER.findall(case_text):
            if named.lower() in labels:
                return named.lower()
        return labeler(case_text)
    return answer


def plausible_label(case_text: str) -> str:
    lowered = case_text.lower()
    for label, words in _LABEL_KEYWORDS:
        if any(w in lowered for w in words):
            return label
    return "other"


_GUIDE_LINE = re.compile(r"^- ([a-z][a-z0-9_]*): (.+)$", re.MULTILINE)
_WORD = re.compile(r"[a-z]{4,}")


def _guided_label(prompt: str, case_text: str, labels: list[str]) -> str:
    """Another domain's label: the one whose name and description (the prompt's label guide) share
    the most words with the case; ties go to the first."""
    guide = {name: desc for name, desc in _GUIDE_LINE.findall(prompt) if name in labels}
    words = set(_WORD.findall(case_text.lower()))

    def stems(text: str) -> set[str]:
        return {w[:5] for w in _WORD.findall(text.lower().replace("_", " "))}

    case_stems = {w[:5] for w in words}
    scores = [(len(case_stems & stems(f"{name} {guide.get(name, '')}")), -i, name) for i, name in enumerate(labels)]
    return max(scores)[2]


def _value_for(name: str, spec: dict, label: str, case_text: str) -> Any:
    if name == "summary":
        first = re.split(r"(?<=[.;])\s", case_text, maxsplit=1)[0]
        return f"Case about {label.replace('_', ' ')}: {first[:200]}"
    if name == "label":
        return label
    if name == "confidence":
        return 0.82
    if name == "severity":
        return PAYMENTS.severity_for(label) if label in PAYMENTS.labels else 3
    if name == "actions":
        if label in PAYMENTS.labels:
            return PAYMENTS.actions_for(label)
        item = spec.get("items", {}).get("properties", {})
        verbs, levels = item.get("action", {}).get("enum") or [], item.get("approval_level", {}).get("enum") or []
        return [{"action": verbs[0], "reason": f"handle the {label.replace('_', ' ')}", "approval_level": levels[0]}] \
            if verbs and levels else []
    kind = spec.get("type")
    if "enum" in spec:
        return spec["enum"][0]
    return {"string": "", "number": 0.5, "integer": 1, "boolean": False, "array": [], "object": {}}.get(kind)


def plausible_answer(messages: list[dict], schema: dict | None, labeler: Callable[[str], str] | None = None) -> dict:
    """An object valid for `schema` (our skills' schemas), derived from the case in the prompt
    (the label from `labeler(case text)` when given, else the plausible one)."""
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    match = _CASE.search(prompt)
    case_text = match.group(1) if match else prompt
    enum = (((schema or {}).get("properties") or {}).get("label") or {}).get("enum")
    if labeler is None and enum and not set(enum) <= set(PAYMENTS.labels):
        label = _guided_label(prompt, case_text, enum)
    else:
        label = (labeler or plausible_label)(case_text)
    properties = (schema or {}).get("properties") or {"summary": {}, "label": {}, "confidence": {}}
    return {name: _value_for(name, spec, label, case_text) for name, spec in properties.items()}


class OpenAITestServer:
    """An in-process OpenAI-compatible server on 127.0.0.1 and a free port."""

    def __init__(self, *, slots: int = 8, latency_s: float = 0.0, model: str = "test-model",
                 faults: Sequence[str | None] | None = None, fault_rates: dict[str, float] | None = None,
                 seed: int = 0, timeout_sleep_s: float = 2.0, retry_after_s: float | None = None,
                 api_key: str | None = None, healthy: bool = True, host: str = "127.0.0.1", port: int = 0,
                 stop_after: int | None = None, labelers: dict[str, Callable[[str], str]] | None = None):
        self.slots, self.latency_s, self.model = slots, latency_s, model
        self.labelers = dict(labelers or {})
        self.timeout_sleep_s, self.retry_after_s, self.api_key, self.healthy = (
            timeout_sleep_s, retry_after_s, api_key, healthy)
        self._host, self._port = host, port
        self.stop_after = stop_after
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(slots)
        self._stopping = threading.Event()
        self._rng = random.Random(seed)
        self._requests: list[dict] = []
        self._faults_served: list[str | None] = []
        self._chat_count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._aborted = 0
        self._wasted_s = 0.0  # slot time spent on requests aborted while running
        self._connections: set[socket.socket] = set()
        self._waiting = 0  # chat requests waiting for a slot, for GET /metrics
        self._tokens = {"prompt": 0, "generation": 0}  # of answered requests, for GET /metrics
        self.set_faults(faults, fault_rates)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    def set_faults(self, faults: Sequence[str | None] | None = None,
                   fault_rates: dict[str, float] | None = None) -> None:
        """Replace the fault plan; a sequence counts from the next chat request."""
        for kind in list(faults or []) + list(fault_rates or {}):
            if kind is not None and kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        with self._lock:
            self._fault_sequence = list(faults or [])
            self._fault_rates = dict(fault_rates or {})

    def start(self) -> "OpenAITestServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _Server((self._host, self._port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a process that dies: no new connections, open ones closed, nothing answered."""
        self._stopping.set()  # wakes requests sleeping on an injected timeout or their latency
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "OpenAITestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- observations --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    @property
    def max_concurrency(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def aborted(self) -> int:
        """Chat requests dropped because their client disconnected before the answer."""
        with self._lock:
            return self._aborted

    @property
    def faults_served(self) -> list[str | None]:
        with self._lock:
            return list(self._faults_served)

    def stats(self) -> dict:
        with self._lock:
            return {"chat_requests": self._chat_count, "max_concurrency": self._max_in_flight,
                    "connections": len({r["client"] for r in self._requests}), "aborted": self._aborted,
                    "wasted_slot_s": round(self._wasted_s, 3),
                    "faults": {k: self._faults_served.count(k) for k in FAULT_KINDS}}

    # -- request handling (called from handler threads) -----------------------------------------
    def _log(self, path: str, headers: dict, body: Any, client: tuple) -> None:
        with self._lock:
            self._requests.append({"path": path, "headers": headers, "body": body, "at": time.time(),
                                   "client": f"{client[0]}:{client[1]}"})

    def _next_fault(self) -> str | None:
        with self._lock:
            self._chat_count += 1
            if self.stop_after is not None and self._chat_count == self.stop_after:
                self._stopping.set()  # from now on nothing is answered; the rest of stop() follows
                threading.Thread(target=self.stop, name="openai-test-server-stop", daemon=True).start()
            if self._fault_sequence:
                fault = self._fault_sequence.pop(0)
            else:
                fault = None
                draw = self._rng.random()
                for kind, share in self._fault_rates.items():
                    if draw < share:
                        fault = kind
                        break
                    draw -= share
            self._faults_served.append(fault)
            return fault

    def _enter_slot(self, gone: Callable[[], bool]) -> bool:
        """Wait for a slot; False when the client went away (or the server stops) meanwhile."""
        with self._lock:
            self._waiting += 1
        while not self._slots.acquire(timeout=_POLL_S):
            if self._stopping.is_set() or gone():
                with self._lock:
                    self._waiting -= 1
                    self._aborted += 1
                return False
        with self._lock:
            self._waiting -= 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        return True

    def _abort(self, running_since: float | None = None) -> None:
        with self._lock:
            self._aborted += 1
            if running_since is not None:
                self._wasted_s += time.monotonic() - running_since

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def _leave_slot(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    def completion(self, body: dict, fault: str | None) -> tuple[str, str, dict]:
        """(content, finish_reason, usage) for a chat request, with the content fault applied."""
        messages = body.get("messages") or []
        schema = (((body.get("response_format") or {}).get("json_schema") or {}).get("schema"))
        content = json.dumps(plausible_answer(messages, schema, self.labelers.get(body.get("model"))))
        finish = "stop"
        if fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        elif fault == "fenced":
            content = f"Sure, here is the JSON you asked for:\n```json\n{content}\n```\nLet me know if you need more."
        elif fault == "prose":
            content = "I am sorry, I cannot help with this case."
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(content) // 4),
                 "total_tokens": prompt_tokens + max(1, len(content) // 4)}
        if fault not in ("http_500", "http_429", "http_503"):  # answered: counted like vLLM's token counters
            with self._lock:
                self._tokens["prompt"] += usage["prompt_tokens"]
                self._tokens["generation"] += usage["completion_tokens"]
        return content, finish, usage

    def prometheus_metrics(self) -> str:
        """vLLM's `/metrics` figures that the metrics sensor reads, in Prometheus text format."""
        with self._lock:
            running, waiting, tokens = self._in_flight, self._waiting, dict(self._tokens)
        labels = f'{{engine="0",model_name="{self.model}"}}'
        families = [("vllm:num_requests_running", "gauge", "", running),
                    ("vllm:num_requests_waiting", "gauge", "", waiting),
                    ("vllm:kv_cache_usage_perc", "gauge", "", running / self.slots),
                    ("vllm:prompt_tokens", "counter", "_total", tokens["prompt"]),
                    ("vllm:generation_tokens", "counter", "_total", tokens["generation"])]
        return "".join(f"# HELP {name}{suffix} {name} of the test server.\n# TYPE {name}{suffix} {kind}\n"
                       f"{name}{suffix}{labels} {float(value)}\n" for name, kind, suffix, value in families)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default listen backlog of 5 drops bursts of new connections

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError)):  # a client that left is no error
            super().handle_error(request, client_address)


def _client_gone(conn: socket.socket, wait_s: float = 0.0) -> bool:
    """Has the client closed its side (within `wait_s`)? A readable socket with nothing to read is at EOF.

    One `select` sleeps the whole wait and wakes at once when the client goes (or `stop()` shuts
    the connection): no polling, so the stand-in spends no CPU of its own while it "generates".
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            readable, _, _ = select.select([conn], [], [], max(0.0, deadline - time.monotonic()))
            if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                return True
        except (OSError, ValueError):
            return True
        if time.monotonic() >= deadline:
            return False
        if readable:  # bytes of a next request already there: not gone, and not worth spinning on
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAITestServer
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections, like with vLLM
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    timeout = 60  # idle keep-alive connections end on their own

    def log_message(self, format, *args):  # noqa: A002 - silence the per-request stderr line
        pass

    def setup(self):
        super().setup()
        self.owner._track(self.connection, True)

    def finish(self):
        self.owner._track(self.connection, False)
        try:
            super().finish()
        except OSError:  # closed under us by stop()
            pass

    def _gone(self) -> bool:
        return _client_gone(self.connection)

    def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            self.close_connection = True

    def _authorized(self) -> bool:
        if self.owner.api_key and self.headers.get("Authorization") != f"Bearer {self.owner.api_key}":
            self._send_json(401, {"error": {"message": "invalid api key", "type": "auth_error"}})
            return False
        return True

    def do_GET(self):  # noqa: N802 - http.server naming
        self.owner._log(self.path, dict(self.headers), None, self.client_address)
        if self.path == "/health":
            self._send_json(200 if self.owner.healthy else 503, {} if self.owner.healthy else {"error": "unhealthy"})
        elif self.path == "/v1/models":
            if self._authorized():
                self._send_json(200, {"object": "list", "data": [
                    {"id": model, "object": "model", "owned_by": "vllm", "max_model_len": 8192}
                    for model in dict.fromkeys([self.owner.model, *self.owner.labelers])]})
        elif self.path == "/metrics":  # unauthenticated, like vLLM's
            data = self.owner.prometheus_metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/_stats":
            self._send_json(200, self.owner.stats())
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):  # noqa: N802
        if self.owner._stopping.is_set():  # a dying server answers nothing
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsable": raw.decode("utf-8", "replace")}
        self.owner._log(self.path, dict(self.headers), body, self.client_address)
        if self.path != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if not self._authorized():
            return
        owner = self.owner
        fault = owner._next_fault()
        if fault == "timeout":
            owner._stopping.wait(owner.timeout_sleep_s)
        elif fault == "drop":
            self.close_connection = True
            return
        if not owner._enter_slot(self._gone):
            self.close_connection = True
            return
        try:
            # A request holds its slot for latency_s in all, our own processing included, as a model
            # server's latency includes its work: capacity is exactly slots / latency_s.
            answer_at = time.monotonic() + owner.latency_s
            content, finish, usage = owner.completion(body, fault)
            if _client_gone(self.connection, answer_at - time.monotonic()):
                owner._abort(running_since=answer_at - owner.latency_s)  # like vLLM: it stops generating
                self.close_connection = True
                return
            if owner._stopping.is_set():
                self.close_connection = True
                return
            if fault == "http_500":
                self._send_json(500, {"error": {"message": "injected server error", "type": "server_error"}})
                return
            if fault in ("http_429", "http_503"):
                status = 429 if fault == "http_429" else 503
                headers = {"Retry-After": str(owner.retry_after_s)} if owner.retry_after_s is not None else None
                self._send_json(status, {"error": {"message": "injected overload", "type": "rate_limit"}}, headers)
                return
        finally:
            owner._leave_slot()
        self._send_json(200, {
            "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or owner.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": usage,
        })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="test-model")
    args = parser.parse_args(argv)
    server = OpenAITestServer(slots=args.slots, latency_s=args.latency, model=args.model, port=args.port).start()
    print(server.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
