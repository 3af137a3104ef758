"""A stand-in for the Kubernetes API server's Jobs endpoints (there is no cluster here).

Stubbing the Kubernetes API is the one allowance of the deploy tests: the real `kubernetes`
client talks HTTP to this server through a throwaway kubeconfig, so the K8sRunLauncher and
`k8s_job_executor` serialize and send exactly what they would send to a cluster. What it does:
- records every Job created (`jobs`: namespace and the JSON body, as sent);
- `run_jobs=True` plays the kubelet: it runs the Job's container command as a local process with
  the container's env, and reports the Job active, succeeded or failed from that process;
- answers reads of a Job and its status, an empty pod list, and deletes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_JOBS = re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/?]+)(?P<status>/status)?)?")
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods")


class KubernetesApiStub:
    def __init__(self, *, run_jobs: bool = False, workdir: Path | None = None, log_dir: Path | None = None):
        self.run_jobs, self.workdir, self.log_dir = run_jobs, workdir, log_dir
        self._lock = threading.Lock()
        self._jobs: list[dict] = []
        self._processes: dict[str, subprocess.Popen] = {}
        self._httpd: ThreadingHTTPServer | None = None

    # -- what was sent -------------------------------------------------------------------------
    @property
    def jobs(self) -> list[dict]:
        with self._lock:
            return list(self._jobs)

    def job_named(self, name: str) -> dict:
        return next(j["body"] for j in self.jobs if j["body"]["metadata"]["name"] == name)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "KubernetesApiStub":
        stub = self

        class Handler(_Handler):
            owner = stub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "stub not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose only cluster is this stub (plain HTTP, a dummy token)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
            "users": [{"name": "stub", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": namespace}}],
        }))
        return path

    # -- the "kubelet" ---------------------------------------------------------------------------
    def _create(self, namespace: str, body: dict) -> None:
        name = body["metadata"]["name"]
        with self._lock:
            self._jobs.append({"namespace": namespace, "body": body})
        if not self.run_jobs:
            return
        container = body["spec"]["template"]["spec"]["containers"][0]
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}
        # The image has `dagster` on its PATH; here it is this interpreter's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        log = open(self.log_dir / f"{name}.log", "wb") if self.log_dir else subprocess.DEVNULL
        process = subprocess.Popen([*container.get("command", []), *container["args"]], env=env,
                                   cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        with self._lock:
            self._processes[name] = process

    def _status(self, name: str) -> dict | None:
        with self._lock:
            known = any(j["body"]["metadata"]["name"] == name for j in self._jobs)
            process = self._processes.get(name)
        if not known:
            return None
        if process is None:
            return {"active": 1}
        code = process.poll()
        return {"active": 1} if code is None else ({"succeeded": 1} if code == 0 else {"failed": 1})


class _Handler(BaseHTTPRequestHandler):
    owner: KubernetesApiStub

    def log_message(self, format, *args):  # noqa: A002 - silence the per-request stderr line
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def do_POST(self):  # noqa: N802 - http.server naming
        match = _JOBS.match(self.path)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not match or match["name"]:
            return self._not_found()
        try:
            self.owner._create(match["ns"], body)
        except Exception as exc:  # surfaces in the client's error instead of a dropped connection
            return self._send(500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": f"{type(exc).__name__}: {exc}", "code": 500})
        self._send(201, body)

    def do_GET(self):  # noqa: N802
        if _PODS.match(self.path):
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        match = _JOBS.match(self.path)
        status = self.owner._status(match["name"]) if match and match["name"] else None
        if status is None:
            return self._not_found()
        self._send(200, {"kind": "Job", "apiVersion": "batch/v1",
                         "metadata": {"name": match["name"], "namespace": match["ns"]}, "status": status})

    def do_DELETE(self):  # noqa: N802
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
