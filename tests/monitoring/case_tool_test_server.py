"""A TEST DOUBLE for the analysts' case tool: a small HTTP server on 127.0.0.1 that answers
Jira's create-issue call and records every request.

It stands in for the real case tool (Jira or similar), which no test can reach; everything
else in the ticket tests is real (httpx over real HTTP, Delta tables, Dagster runs). Only what
`CaseToolResource` uses is implemented:

- `POST /rest/api/2/issue`: answers 201 with `{"id", "key", "self"}` (keys `OPS-1`, `OPS-2`, ...);
- `faults`: answers to force, in arrival order (`[500, None, ...]`: the first request gets a 500,
  the second is served), and `refuse`: a status for every request whose summary contains a
  given text (`{"evt-3": 400}`), so one case can be refused while the others go through;
- `requests`: every request received (path, headers, parsed JSON body), thread-safe.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence


class CaseToolTestServer:
    def __init__(self, *, faults: Sequence[int | None] = (), refuse: dict[str, int] | None = None) -> None:
        self.faults = list(faults)
        self.refuse = dict(refuse or {})
        self.requests: list[dict] = []
        self.opened: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict]:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        with self._lock:
            self.requests.append({"method": handler.command, "path": handler.path,
                                  "headers": dict(handler.headers.items()), "body": body})
            fault = self.faults.pop(0) if self.faults else None
            if handler.path != "/rest/api/2/issue" or handler.command != "POST":
                return 404, {"errorMessages": ["not found"]}
            if fault is not None:
                return fault, {"errorMessages": [f"forced {fault}"]}
            summary = str(((body or {}).get("fields") or {}).get("summary", ""))
            for text, status in self.refuse.items():
                if text in summary:
                    return status, {"errors": {"summary": f"refused: {text}"}}
            number = len(self.opened) + 1
            issue = {"id": str(10000 + number), "key": f"OPS-{number}",
                     "self": f"{self.base_url}/rest/api/2/issue/{10000 + number}"}
            self.opened.append({**issue, "fields": body["fields"]})
            return 201, issue

    def start(self) -> "CaseToolTestServer":
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer()

            def do_GET(self) -> None:  # noqa: N802
                self._answer()

            def _answer(self) -> None:
                status, payload = double._handle(self)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "CaseToolTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
