"""The gate on live traffic (`gate.health`): which gated cases are audited, realized precision with its
Wilson interval, and the labels a gate version stops serving; and how `pipeline.enrich_cases` routes
and records them (a scripted gate and LLM runner: the decisions, not the models, are under test)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from llm_assets.domain import current_pack
from llm_assets.gate import health
from llm_assets.gate.model import GateDecision
from llm_assets.llm import pipeline
from llm_assets.llm.types import CaseResult
from llm_assets.resources.delta import DeltaLakeStorage

pytestmark = pytest.mark.unit

LABELS = current_pack().labels
VERSIONS = pipeline.Versions(model_version="m@1", prompt_version="p@1", kb_index_version="kb@1", gate_version="g@1")


def test_the_audit_share_is_a_deterministic_hash_of_the_event_id_and_bounded():
    ids = [f"evt-{n:05d}" for n in range(10_000)]
    labels = [LABELS[n % len(LABELS)] for n in range(10_000)]
    plan = health.AuditPlan(share=0.05)

    chosen = plan.select(ids, labels)

    assert 0.04 < len(chosen) / len(ids) < 0.06
    assert chosen == plan.select(ids, labels)  # the same cases on every run
    shuffled = list(reversed(ids))  # and whatever order the batch has
    assert {shuffled[i] for i in plan.select(shuffled, list(reversed(labels)))} == {ids[i] for i in chosen}
    assert all(health.audit_bucket(ids[i]) < 0.05 for i in chosen)
    # At most max_share of the batch's gated cases, however large the share asked for.
    assert len(health.AuditPlan(share=1.0, max_share=0.2).select(ids[:100], labels[:100])) == 20
    assert health.AuditPlan(share=0.0).select(ids[:100], labels[:100]) == []


def test_labels_short_of_their_daily_minimum_are_topped_up_lowest_hash_first():
    ids = [f"case-{n}" for n in range(40)]
    labels = [LABELS[0]] * 38 + [LABELS[1]] * 2
    plan = health.AuditPlan(share=0.0, quota={LABELS[1]: 2, LABELS[0]: 3}, max_share=1.0)

    chosen = plan.select(ids, labels)

    assert Counter(labels[i] for i in chosen) == {LABELS[0]: 3, LABELS[1]: 2}
    first = sorted((i for i in range(38)), key=lambda i: health.audit_bucket(ids[i]))[:3]
    assert sorted(i for i in chosen if labels[i] == LABELS[0]) == sorted(first)


def test_wilson_interval_matches_the_textbook_values():
    assert health.wilson_interval(0, 0) == (0.0, 1.0)
    lower, upper = health.wilson_interval(50, 100)
    assert lower == pytest.approx(0.4038, abs=1e-3) and upper == pytest.approx(0.5962, abs=1e-3)
    lower, upper = health.wilson_interval(20, 20)
    assert lower == pytest.approx(0.8389, abs=1e-3) and upper == 1.0


def _audits(rows: list[tuple[str, str, str]], source: str = "llm", day: str = "2026-12-01") -> pl.DataFrame:
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    return pl.DataFrame([{"event_id": e, "event_date": day, "gate_version": "g@1", "label": label,
                          "audit_label": truth, "audit_source": source, "audited_at": at}
                         for e, label, truth in rows], schema=health.AUDITS_SCHEMA)


def test_a_label_is_shut_off_only_when_its_audits_show_it_under_target():
    a, b, c, d = LABELS[:4]
    audits = _audits([(f"a{n}", a, a if n < 2 else b) for n in range(10)]  # 2/10: under target
                     + [(f"b{n}", b, b) for n in range(10)]  # 10/10: its interval reaches the target
                     + [(f"c{n}", c, a) for n in range(3)]  # 0/3: too few audits to judge
                     + [(f"d{n}", d, a) for n in range(12)])  # 0/12, but already shut

    precision = health.realized_precision(audits, LABELS)
    decided = health.decide_shutoffs(precision, already=[d], gate_version="g@1", target=0.97, min_audits=8)

    assert precision[a].precision == 0.2 and precision[b].precision == 1.0 and precision[LABELS[4]].audited == 0
    assert decided["label"].to_list() == [a]
    row = decided.row(0, named=True)
    assert row["upper"] < 0.97 and row["audited"] == 10 and row["confirmed"] == 2
    assert "realized precision 0.200" in row["reason"] and "< target 0.97" in row["reason"]


def test_ledgers_keep_one_audit_per_case_a_rating_winning_and_shutoffs_per_gate_version(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    a, b = LABELS[:2]
    health.record_audits(delta, _audits([("e1", a, a), ("e2", a, a)]))
    health.record_audits(delta, _audits([("e1", a, b)], source="rating"))  # an analyst says otherwise
    health.record_audits(delta, _audits([("e3", a, a)], day="2026-11-01"))  # outside the window

    audits = health.read_audits(delta, "g@1", health.window_days("2026-12-01"))

    assert sorted(audits["event_id"]) == ["e1", "e2"]
    assert audits.filter(pl.col("event_id") == "e1")["audit_source"].to_list() == ["rating"]
    assert health.realized_precision(audits)[a].confirmed == 1
    health.record_shutoffs(delta, health.decide_shutoffs(
        {a: health.LabelPrecision(a, 10, 0)}, (), "g@1", target=0.97, min_audits=8))
    assert set(health.read_shutoffs(delta, "g@1")) == {a}
    assert health.read_shutoffs(delta, "g@1")[a].startswith(f"gate shut off for {a} since ")
    assert health.read_shutoffs(delta, "g@2") == {}  # a new gate version serves every label again
    assert health.audit_quota(audits, ["2026-12-01"], [a, b], 3) == {a: 1, b: 3}


class ScriptedGate:
    """Decides every case as `label` with confidence 0.99 (threshold 0.9)."""

    def __init__(self, labels: list[str]):
        self.labels = labels

    def decide(self, vectors, threshold=None):
        return [GateDecision(label, 0.99, True, 0.9) for label in self.labels]


def _cases(n: int) -> pl.DataFrame:
    return pl.DataFrame({"event_id": [f"case-{i}" for i in range(n)], "event_date": ["2026-12-01"] * n,
                         "payload_raw": [f"Settlement amount for order {i} differs from the statement" for i in range(n)]})


def _llm_answering(label: str, calls: list[list[str]]):
    def run(cases):
        calls.append([c.event_id for c in cases])
        return [CaseResult(event_id=c.event_id, summary="s", label=label, confidence=0.9, actions=[], severity=2,
                           ok=True, calls=1) for c in cases]
    return run


def _enrich(labels, **kwargs) -> pipeline.EnrichmentRun:
    cases = _cases(len(labels))
    return pipeline.enrich_cases(cases, versions=VERSIONS, retrieve=lambda v: [[] for _ in range(len(v))],
                                 embed=lambda texts: np.zeros((len(texts), 4)), gate=ScriptedGate(labels), **kwargs)


def test_a_shut_off_label_goes_to_the_llm_and_every_row_says_why():
    a, b = LABELS[:2]
    calls: list[list[str]] = []
    reason = f"gate shut off for {a} since 2026-12-01 10:00:00Z: realized precision 0.2"

    run = _enrich([a, b, a], llm=_llm_answering(b, calls), shut_off={a: reason})

    assert [r["route"] for r in run.rows] == ["llm", "gate", "llm"]
    assert run.rows[0]["route_reason"] == reason and run.rows[2]["route_reason"] == reason
    assert run.rows[1]["route_reason"] == f"gate sure: {b} 0.990 >= threshold 0.900"
    assert calls == [["case-0", "case-2"]] and run.shut_off == 2


def test_without_an_llm_a_shut_off_label_is_decided_by_the_packs_rules_not_the_gate():
    a = LABELS[-1]
    run = _enrich([a, a], shut_off={a: "shut"})

    assert {r["route"] for r in run.rows} == {"local"}
    rules = current_pack().keyword_label(run.rows[0]["summary"].split(": ", 1)[1])[0]
    assert {r["label"] for r in run.rows} == {rules} and all(r["route_reason"] == "shut" for r in run.rows)


def test_audited_gated_cases_keep_the_gates_answer_and_record_the_llms_in_the_same_batch():
    a, b = LABELS[:2]
    calls: list[list[str]] = []
    labels = [a] * 10
    audit = health.AuditPlan(share=0.0, quota={a: 3}, max_share=1.0).select

    run = _enrich(labels, llm=_llm_answering(b, calls), audit=audit)

    audited = [r for r in run.rows if r["audit_source"]]
    assert len(audited) == 3 and run.audited == 3 and len(calls) == 1 and len(calls[0]) == 3
    assert {r["route"] for r in run.rows} == {"gate"} and {r["label"] for r in run.rows} == {a}
    assert {r["audit_label"] for r in audited} == {b} and {r["llm_calls"] for r in audited} == {1}
    assert run.llm_calls == 3  # audits count in the calls per case
    frame = health.audits_frame(run.rows)
    assert frame.height == 3 and set(frame["gate_version"]) == {"g@1"}
    # No LLM: nothing is audited.
    assert _enrich(labels, audit=audit).audited == 0


def test_a_label_in_doubt_is_audited_more_until_the_evidence_decides():
    a, b, c = LABELS[:3]
    precision = {a: health.LabelPrecision(a, 2, 1), b: health.LabelPrecision(b, 10, 10),
                 c: health.LabelPrecision(c, 10, 2)}  # a: in doubt; b: fine; c: decided (shut off)
    assert health.labels_in_doubt(precision, 0.97, min_audits=8) == {a: health.DEFAULT_DOUBT_SHARE}
    ids = [f"case-{n}" for n in range(400)]
    labels = [a, b] * 200
    plan = health.AuditPlan(share=0.05, doubt={a: 0.5}, max_share=1.0)
    chosen = Counter(labels[i] for i in plan.select(ids, labels))
    assert chosen[a] > 4 * chosen[b] and 70 < chosen[a] < 130
