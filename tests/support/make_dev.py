"""`make dev` as a user starts it: the real `llm-assets dev` in a process group of its own, on a
temporary home and free ports; its one ready line says where the UI, the rating page and Kafka are."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.stack import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"Dagster UI on (http://127\.0\.0\.1:\d+) .*rating page on (http://\S+) "
                   r"\(log in as \S+: (http://\S+)\); Kafka on (\S+);")


@dataclass
class DevProcess:
    process: subprocess.Popen
    ui: str
    rating_page: str
    bootstrap: str
    analyst_login: str = ""  # the local analyst's one-click login URL (`/login?token=...`)

    @property
    def analyst_token(self) -> str:
        return self.analyst_login.split("token=", 1)[1]

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ctrl-C, as a terminal sends it to its foreground job."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(timeout=timeout_s)


# What a test session may have set for its own stacks (a package fixture's topic, roots, backends):
# a fresh `make dev` sees none of it, as on a new user's machine.
PROJECT_VARIABLES = ("KAFKA_", "MILVUS_", "LLM_", "DELTA_", "ARTIFACT_", "DAGSTER_", "SAMPLE_DATA_", "RATINGS_",
                     "AUDIT_", "CASE_TOOL_", "EMBEDDING_")


def dev_environment(home: Path, samples: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(PROJECT_VARIABLES) or k == "LLM_ASSETS_TEST_ARTIFACTS"}
    env.update(LLM_ASSETS_HOME=str(home), SAMPLE_DATA_DIR=str(samples))
    return env


def start_dev(env: dict, log: Path, *args: str, timeout_s: float = 900) -> DevProcess:
    """Start `llm-assets dev ARGS` (appending to `log`) and wait for this start's ready line."""
    seen = len(READY.findall(log.read_text())) if log.exists() else 0
    with log.open("a") as out:
        process = subprocess.Popen([sys.executable, "-m", "llm_assets.cli", "dev", *args], cwd=REPO_ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready():
        if process.poll() is not None:
            raise RuntimeError(f"make dev exited:\n{log.read_text()[-3000:]}")
        return READY.findall(log.read_text())[seen:]

    ui, rating_page, login, bootstrap = wait_for(ready, timeout_s, "make dev's ready line")[0]
    return DevProcess(process, ui, rating_page, bootstrap, login)
