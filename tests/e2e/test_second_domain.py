"""A second domain pack runs the whole flow with no code change.

`tests/packs/it_service_desk` is an IT service desk: six labels, verbs and approval levels of its
own, other event field names (`ticket_id`, `opened_at`, `description`, ...), its own PII pattern,
a KB of Markdown, HTML, text and a PDF, its own golden cases and prompts. The real `make dev`
runs with `LLM_ASSETS_DOMAIN` pointing at it and `LLM_BASE_URL` at the OpenAI-compatible test
server; everything else is driven from outside, as a team would:

1. `make dev` sets itself up on the pack (signals from its CSV, the KB index, the golden cases,
   the gate; the local version evaluated and promoted) and produces no sample events (the
   generator writes payments cases);
2. a plain confluent-kafka producer sends the desk's tickets (and four malformed ones) in its own
   field names: the sensor's runs take them to `raw/events` (dead letters say the desk's field
   names), `curated/cases`, `enriched/cases` (route `gate` or `local`) and `cases.enriched`;
3. through GraphQL, the LLM version is evaluated on the pack's golden cases, passes the blocking
   `no_regression_vs_production` check and is promoted; new tickets are then decided by the LLM;
4. samples are drawn, an analyst rates them on the rating page, the ratings are imported and
   join `evaluation/golden_cases`; the drift report is built.

No label or action verb of the payments pack appears in the prompts sent, the rows written or the
messages published.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import polars as pl
import pytest
from confluent_kafka import Producer

from llm_assets.asset_keys import (
    CURATED_CASES,
    ENRICHED_CASES,
    EVALUATION_GOLDEN_CASES,
    EVALUATION_RATINGS,
    EVALUATION_SAMPLES,
    RAW_EVENTS,
    REJECTED_EVENTS,
)
from llm_assets.dev.process import free_port
from llm_assets.domain.pack import DEFAULT_PACK, PACKS_DIR, load_pack
from llm_assets.lib.redaction import redact
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.settings import ENRICHED_TOPIC
from tests.e2e.stack import UIClient, consume_all, wait_for
from tests.packs.it_service_desk import events as desk_events
from tests.support.make_dev import dev_environment, start_dev
from tests.support.openai_test_server import OpenAITestServer

pytestmark = pytest.mark.e2e

PACK_DIR = Path(__file__).resolve().parents[1] / "packs" / "it_service_desk"
PAYMENTS = load_pack(PACKS_DIR / DEFAULT_PACK)
LLM_VERSION = "vllm-qwen2.5-7b@v3"  # endpoint LLM_BASE_URL in the shipped registry
TIMEOUT_S = 900  # set-up (KB index, gate, evaluation) and runs on 2 shared cores


def _payments_words(text: str) -> list[str]:
    """Payments labels anywhere, payments verbs as JSON strings or list items (they are English words)."""
    labels = [label for label in PAYMENTS.labels if label in text and label != PAYMENTS.fallback_label]
    verbs = [verb for verb in PAYMENTS.action_verbs if f'"{verb}"' in text or re.search(rf"\b{verb}, ", text)]
    return labels + verbs


def _oracle(pack_texts: dict[str, str]):
    """The LLM the test server plays: the right label for every text it knows (golden cases, tickets)."""
    return lambda case_text: pack_texts.get(case_text.strip(), "how_to_question")


def _produce(bootstrap: str, tickets: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for ticket in tickets:
        producer.produce("events.raw", key=str(ticket.get("ticket_id") or "none").encode(),
                         value=json.dumps(ticket).encode())
    assert producer.flush(60) == 0


def _ids(delta: DeltaLakeStorage, key, prefix: str) -> set[str]:
    return {i for i in delta.read(key)["event_id"].to_list() if i.startswith(prefix)} if delta.exists(key) else set()


def _check_results(ui: UIClient, run_id: str) -> dict[str, bool]:
    data = ui.graphql("""query Checks($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
          eventConnection(afterCursor: null) { events { __typename
            ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } } }""",
                      {"runId": run_id})["runOrError"]
    return {e["evaluation"]["checkName"]: e["evaluation"]["success"]
            for e in data["eventConnection"]["events"] if e["__typename"] == "AssetCheckEvaluationEvent"}


def _succeeds(ui: UIClient, keys: list[str], **launch) -> str:
    run_id = ui.launch_assets(keys, **launch)
    run = ui.wait_for_run(run_id, TIMEOUT_S)
    assert run["status"] == "SUCCESS", ui.failure(run_id)
    return run_id


@pytest.fixture
def desk_env(tmp_path, monkeypatch):
    """This process redacts and labels like the pack (the oracle keys on redacted texts)."""
    monkeypatch.setenv("LLM_ASSETS_DOMAIN", str(PACK_DIR))
    now = datetime.now(timezone.utc)
    first = desk_events.events(now)
    later = [{**t, "ticket_id": t["ticket_id"].replace("INC-7", "INC-8")}
             for t in desk_events.events(now, n=30, seed=11)[:30]]
    labels = desk_events.expected_labels()
    texts = {redact(t["description"]).text.strip(): labels[t["ticket_id"]] for t in first
             if t.get("ticket_id") in labels}
    texts.update({redact(t["description"]).text.strip(): labels[t["ticket_id"].replace("INC-8", "INC-7")]
                  for t in later})
    for line in (PACK_DIR / "golden" / "cases.jsonl").read_text().splitlines():
        row = json.loads(line)
        texts[redact(row["description"]).text.strip()] = row["label"]
    return now, first, later, texts


def test_an_it_service_desk_pack_runs_the_whole_flow_without_a_code_change(tmp_path, desk_env):
    now, first, later, texts = desk_env
    home = tmp_path / "home"
    delta = DeltaLakeStorage(root=str(home / "delta"))
    with OpenAITestServer(slots=8, labelers={"Qwen/Qwen2.5-7B-Instruct": _oracle(texts)}) as server:
        env = dev_environment(home, tmp_path / "samples")
        env.update(LLM_ASSETS_DOMAIN=str(PACK_DIR), LLM_BASE_URL=f"{server.base_url}/v1")
        log = tmp_path / "dev.log"
        dev = start_dev(env, log, "--port", str(free_port()), "--broker-port", str(free_port()))
        try:
            ui = UIClient(dev.ui)
            output = log.read_text()
            assert "no sample events" in output and "it_service_desk@" in output
            assert delta.exists(EVALUATION_GOLDEN_CASES)  # set-up built it, with the gate it judges

            # 2. The desk's producer: its field names, four malformed tickets.
            _produce(dev.bootstrap, first)
            wanted = {t["ticket_id"] for t in first if str(t.get("ticket_id", "")).startswith("INC-7")}
            wait_for(lambda: wanted <= _ids(delta, ENRICHED_CASES, "INC-7"), TIMEOUT_S, "the tickets enriched", 3)
            for key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES):
                assert _ids(delta, key, "INC-7") == wanted, key
            wait_for(lambda: delta.exists(REJECTED_EVENTS)
                     and delta.read(REJECTED_EVENTS).height >= desk_events.MALFORMED_COUNT, 120, "the dead letters", 2)
            rejected = delta.read(REJECTED_EVENTS)
            reasons = " | ".join(rejected["error"].to_list())
            assert rejected.height >= desk_events.MALFORMED_COUNT and "ticket_id" in reasons, reasons
            rows = delta.read(ENRICHED_CASES).filter(pl.col("event_id").str.starts_with("INC-7"))
            pack = load_pack(PACK_DIR)
            assert set(rows["label"]) <= set(pack.labels) and set(rows["route"]) <= {"gate", "local"}
            verbs = {a["action"] for raw in rows["actions"].to_list() for a in json.loads(raw)}
            assert verbs and verbs <= set(pack.action_verbs), verbs
            assert all(v.startswith("local-rules@v1+it_service_desk@") for v in rows["prompt_version"])
            assert rows["gate_version"].null_count() == 0 and "none" not in set(rows["kb_index_version"])
            local_accuracy = sum(label == desk_events.expected_labels()[e]
                                 for e, label in rows.select("event_id", "label").iter_rows()) / rows.height
            # The desk's PII pattern: no badge id in clear in a summary.
            assert not any(re.search(r"EMP-\d{6}", s) for s in rows["summary"].to_list())

            # 3. The LLM version: evaluated on the pack's golden cases, checked against production, promoted.
            ui.graphql("""mutation Add($selector: RepositorySelector!, $name: String!, $key: String!) {
                  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
                  __typename } }""", {"selector": {"repositoryLocationName": "llm_assets",
                                                  "repositoryName": "__repository__"},
                                     "name": "model_versions", "key": LLM_VERSION})
            evaluation = _succeeds(ui, ["models/evaluation"], partition=LLM_VERSION)
            assert _check_results(ui, evaluation) == {"no_regression_vs_production": True}
            _succeeds(ui, ["models/production"],
                      run_config={"ops": {"models__production": {"config": {"version": LLM_VERSION}}}})
            _produce(dev.bootstrap, later)
            later_ids = {t["ticket_id"] for t in later}
            wait_for(lambda: later_ids <= _ids(delta, ENRICHED_CASES, "INC-8"), TIMEOUT_S, "the later tickets", 3)
            decided = delta.read(ENRICHED_CASES).filter(pl.col("event_id").is_in(list(later_ids)))
            assert set(decided["model_version"]) == {LLM_VERSION}
            assert "llm" in set(decided["route"]), decided["route"].value_counts()
            assert all(v.startswith("enrich_case@v3+it_service_desk@") for v in decided["prompt_version"])
            prompts = [json.dumps(r["body"]) for r in server.chat_requests]
            assert prompts and not any(_payments_words(p) for p in prompts)
            schema = server.chat_requests[-1]["body"]["response_format"]["json_schema"]["schema"]["properties"]
            assert schema["label"]["enum"] == list(pack.labels)
            assert schema["actions"]["items"]["properties"]["action"]["enum"] == list(pack.action_verbs)

            # The topic: every ticket once, in the desk's words.
            published = [m for m in consume_all(dev.bootstrap, ENRICHED_TOPIC) if m["event_id"].startswith("INC-")]
            assert {m["event_id"] for m in published} >= wanted | later_ids
            assert not _payments_words(json.dumps(published))
            assert not _payments_words(json.dumps(delta.read(ENRICHED_CASES).select(
                "label", "actions", "summary").to_dicts()))

            # 4. Samples, ratings through the rating page, golden cases, drift.
            today = now.strftime("%Y-%m-%d")
            _succeeds(ui, ["evaluation/samples"], partition=today)
            samples = delta.read(EVALUATION_SAMPLES).filter(pl.col("event_date") == today)
            assert samples.height and set(samples["label"]) <= set(pack.labels)
            bearer = {"Authorization": f"Bearer {dev.analyst_token}"}  # the local analyst make dev signs in
            page = httpx.get(dev.rating_page, timeout=30, headers=bearer)
            assert page.status_code == 200 and not _payments_words(page.text)
            rated = samples["event_id"].to_list()[:12]
            for event_id in rated:
                response = httpx.post(f"{dev.rating_page}/cases/{event_id}", timeout=30, headers=bearer,
                                      data={"label_correct": "yes"})
                assert response.status_code == 303, response.text[-500:]
            _succeeds(ui, ["evaluation/ratings"])
            assert set(rated) <= set(delta.read(EVALUATION_RATINGS)["event_id"].to_list())
            _succeeds(ui, ["evaluation/golden_cases"])
            golden = delta.read(EVALUATION_GOLDEN_CASES)
            from_ratings = golden.filter(pl.col("origin") == "rating")
            assert from_ratings.height and set(from_ratings["event_id"]) <= set(rated)
            assert golden.filter(pl.col("origin") == "seed").height == 63
            _succeeds(ui, ["monitoring/drift_report"], partition=today)
            print(f"\nIT desk: {rows.height} tickets decided locally (accuracy {local_accuracy:.2f} against the "
                  f"templates' labels), {decided.height} by the LLM version; {len(rated)} ratings, "
                  f"{from_ratings.height} of them golden cases now", flush=True)
        finally:
            dev.stop()
