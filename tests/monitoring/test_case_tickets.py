"""`monitoring/case_tickets`: one ticket per severe case in the case tool, never two.

The case tool is `CaseToolTestServer` (a test double on 127.0.0.1 that records requests);
the HTTP client, the Delta tables and the Dagster runs are real.
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import CASE_TICKETS
from llm_assets.monitoring.assets import case_tickets
from llm_assets.resources.case_tool import CaseToolResource, CaseToolUnavailable
from llm_assets.dev.process import free_port
from tests.evaluation.lake import make_cases, write_cases
from tests.monitoring.case_tool_test_server import CaseToolTestServer

pytestmark = pytest.mark.integration

DAY = "2026-11-18"


@pytest.fixture
def severe_day(delta):
    """A day of 40 cases; returns the ids of those with severity >= 4."""
    cases = make_cases(DAY, 40, seed=31)
    write_cases(delta, cases)
    severe = sorted(c.event_id for c in cases if c.severity >= 4)
    assert 3 <= len(severe) < 40
    return severe


def _tool(server: CaseToolTestServer | None, **overrides) -> CaseToolResource:
    settings = {"base_url": server.base_url, "user": "bot@example.com", "token": "secret", "project": "OPS",
                "backoff_s": 0.01, "max_backoff_s": 0.05} if server else {}
    return CaseToolResource(**{**settings, **overrides})


def _run(delta, tool: CaseToolResource, instance=None):
    return dg.materialize([case_tickets], partition_key=DAY, instance=instance, raise_on_error=False,
                          resources={"delta": delta, "case_tool": tool})


def _metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("monitoring__case_tickets")[0].metadata.items()}


def test_one_ticket_per_severe_case_and_a_rerun_opens_no_duplicate(delta, severe_day):
    with CaseToolTestServer() as server:
        first = _run(delta, _tool(server))
        assert first.success
        assert sorted(r["body"]["fields"]["summary"].split("] ")[1] for r in server.requests) == severe_day
        fields = server.requests[0]["body"]["fields"]
        assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
        assert fields["summary"].startswith("[") and "Proposed actions:" in fields["description"]
        assert server.requests[0]["headers"]["Authorization"].startswith("Basic ")
        assert _metadata(first)["opened_now"] == len(severe_day)

        # A re-run, and a run after a restart (a fresh instance: only the Delta table remembers).
        assert _run(delta, _tool(server)).success
        restarted = _run(delta, _tool(server), instance=dg.DagsterInstance.ephemeral())
        assert restarted.success and _metadata(restarted)["already_ticketed"] == len(severe_day)
        assert len(server.requests) == len(severe_day)
    tickets = delta.read(CASE_TICKETS)
    assert sorted(tickets["event_id"]) == severe_day and tickets["ticket_key"].n_unique() == len(severe_day)


def test_a_server_error_is_retried_and_the_ticket_opened_once(delta, severe_day):
    with CaseToolTestServer(faults=[500, 503]) as server:
        result = _run(delta, _tool(server))
        assert result.success
        assert len(server.requests) == len(severe_day) + 2 and len(server.opened) == len(severe_day)
    tickets = delta.read(CASE_TICKETS)
    assert tickets.height == len(severe_day)
    assert tickets.filter(pl.col("attempts") == 3).height == 1  # the first case: 500, 503, then opened


def test_a_refused_case_is_reported_and_the_other_tickets_are_kept(delta, severe_day):
    refused = severe_day[1]
    with CaseToolTestServer(refuse={refused: 400}) as server:
        result = _run(delta, _tool(server))
        assert result.success
        metadata = _metadata(result)
        assert metadata["refused"] == 1 and refused in metadata["refusals"]
        assert metadata["opened_now"] == len(severe_day) - 1
        check = result.get_asset_check_evaluations()[0]
        assert check.check_name == "case_tickets_opened" and not check.passed
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert sorted(delta.read(CASE_TICKETS)["event_id"]) == [e for e in severe_day if e != refused]

        # The refused case is tried again on the next run; the others are not touched.
        server.refuse.clear()
        before = len(server.requests)
        assert _run(delta, _tool(server)).success
        assert [r["body"]["fields"]["summary"].split("] ")[1] for r in server.requests[before:]] == [refused]
    assert sorted(delta.read(CASE_TICKETS)["event_id"]) == severe_day


def test_an_unreachable_tool_fails_the_run_after_retries_and_keeps_what_was_opened(delta, severe_day):
    with CaseToolTestServer(faults=[None, 500, 500, 500]) as server:
        result = _run(delta, _tool(server, max_attempts=3))
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
        assert "unavailable" in failure.description and failure.metadata["opened"].value == 1
        assert delta.read(CASE_TICKETS).height == 1  # opened before the outage, recorded
        assert _run(delta, _tool(server)).success
        assert len(server.opened) == len(severe_day)
    with pytest.raises(CaseToolUnavailable, match="3 attempts"):
        _tool(None, base_url=f"http://127.0.0.1:{free_port()}", project="OPS", max_attempts=3,
              backoff_s=0.01).create_issue("s", "d")


def test_without_configuration_the_asset_reports_not_configured(delta, severe_day):
    result = _run(delta, CaseToolResource())
    assert result.success
    metadata = _metadata(result)
    assert metadata["status"] == "not configured" and metadata["eligible_cases"] == len(severe_day)
    assert not delta.exists(CASE_TICKETS)


def test_the_bound_case_tool_is_off_by_default_and_its_token_never_a_plain_value(monkeypatch):
    from llm_assets.resources.environments import resources_for

    for name in ("CASE_TOOL_URL", "CASE_TOOL_USER", "CASE_TOOL_TOKEN", "CASE_TOOL_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    assert not resources_for("local")["case_tool"].configured
    monkeypatch.setenv("CASE_TOOL_URL", "https://cases.example.com")
    monkeypatch.setenv("CASE_TOOL_PROJECT", "OPS")
    monkeypatch.setenv("CASE_TOOL_TOKEN", "s3cret")
    local, prod = resources_for("local")["case_tool"], resources_for("prod")["case_tool"]
    assert local.configured and local.base_url == "https://cases.example.com"
    assert isinstance(local.token, dg.EnvVar) and isinstance(prod.token, dg.EnvVar)
    assert isinstance(prod.base_url, dg.EnvVar) and isinstance(prod.project, dg.EnvVar)
