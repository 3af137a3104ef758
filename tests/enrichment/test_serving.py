"""Which model version decides which case (pure): production and its rollout per row, the rows a
promotion leaves behind, one run over two versions, and the per-version transport."""

import numpy as np
import polars as pl
import pytest

from llm_assets.enrichment import serving

from llm_assets.llm import pipeline
from llm_assets.llm.types import CaseResult
from llm_assets.models.production import NOTHING_PROMOTED, ProductionState, serves_new_version
from llm_assets.resources.llm import LLMResource

pytestmark = pytest.mark.unit

ROLLOUT = ProductionState(version="good@v2", previous_version="local-rules@v1", rollout_share=0.25,
                          promoted_at="2026-11-30T00:00:00+00:00")
IDS = [f"evt-{i:05d}" for i in range(2000)]


def test_nothing_promoted_leaves_every_case_to_the_environment_and_no_row_behind():
    stored = pl.DataFrame({"event_id": IDS[:3], "model_version": ["vllm:m", "local-rules@v1+gate:g", None]})
    assert serving.served_by(NOTHING_PROMOTED, IDS[:3]) == [None, None, None]
    assert serving.rows_behind(NOTHING_PROMOTED, stored).is_empty()


def test_a_rollout_serves_its_share_by_event_id_and_the_rest_keep_the_previous_version():
    served = serving.served_by(ROLLOUT, IDS)
    share = served.count("good@v2") / len(IDS)
    assert 0.22 <= share <= 0.28 and set(served) == {"good@v2", "local-rules@v1"}
    assert served == serving.served_by(ROLLOUT, IDS)  # deterministic
    assert all((v == "good@v2") == serves_new_version(e, 0.25) for e, v in zip(IDS, served))


def test_rows_on_another_version_than_their_cases_are_behind_whatever_their_gate():
    served = serving.served_by(ROLLOUT, IDS[:400])
    new, old = served.index("good@v2"), served.index("local-rules@v1")
    # Current: a rollout case on the new version, a case of the rest on the previous one (another gate).
    # Behind: the same two cases on the other version.
    stored = pl.DataFrame({"event_id": [IDS[new], IDS[old], IDS[new], IDS[old]],
                           "model_version": ["good@v2", "local-rules@v1+gate:g2", "local-rules@v1+gate:g1",
                                             "good@v2"]})
    behind = serving.rows_behind(ROLLOUT, stored)
    assert behind.to_dicts() == [{"event_id": IDS[new], "model_version": "local-rules@v1+gate:g1"},
                                 {"event_id": IDS[old], "model_version": "good@v2"}]
    assert serving.is_version_of("local-rules@v1+gate:none", "local-rules@v1")
    assert not serving.is_version_of("local-rules@v10+gate:g", "local-rules@v1")


def test_the_version_mix_names_each_version_its_role_share_and_rows():
    served = serving.served_by(ROLLOUT, IDS[:100])
    partition = pl.DataFrame({"event_id": IDS[:100], "model_version": [
        "good@v2" if v == "good@v2" else "local-rules@v1+gate:g" for v in served]})
    partition = partition.with_columns(pl.when(pl.col("event_id") == IDS[0]).then(pl.lit("vllm:old"))
                                       .otherwise(pl.col("model_version")).alias("model_version"))
    mix = {row[0]: row[1:] for row in serving.version_mix(ROLLOUT, partition, written_ids=IDS[:10])}
    assert mix["good@v2"][:2] == ("production (rolling out)", 0.25)
    assert mix["local-rules@v1+gate:g"][:2] == ("previous (rest of the cases)", 0.75)
    assert mix["vllm:old"][0].startswith("behind") and mix["vllm:old"][2] == 1
    assert sum(m[2] for m in mix.values()) == 100 and sum(m[4] for m in mix.values()) == 10


def test_plan_increment_adds_the_rows_behind_once():
    curated = pl.DataFrame({"event_date": ["d"] * 3, "event_id": ["a", "b", "c"], "source_sha256": ["1", "2", "3"]})
    stored = pl.DataFrame({"event_date": ["d"] * 2, "event_id": ["a", "b"], "source_sha256": ["1", "x"]})
    assert sorted(pipeline.plan_increment(curated, stored)["event_id"]) == ["b", "c"]
    assert sorted(pipeline.plan_increment(curated, stored, ["a", "b"])["event_id"]) == ["a", "b", "c"]


def test_one_run_over_two_versions_keeps_the_case_order_and_each_versions_cache_keys():
    cases = pl.DataFrame({"event_id": IDS[:6], "event_date": ["2026-11-18"] * 6,
                          "payload_raw": [f"Duplicate row in settlement file {i}" for i in range(6)]})
    served = ["new", "old", "new", "old", "old", "new"]
    asked: list[list[str]] = []

    def llm(contexts):
        asked.append([c.event_id for c in contexts])
        return [CaseResult(event_id=c.event_id, summary="s", label="data_quality", confidence=0.9, actions=[],
                           severity=2, ok=True, calls=1) for c in contexts]

    def versions(name):
        return pipeline.Versions(model_version=name, prompt_version="p", kb_index_version="kb")

    strategies = {"new": pipeline.Strategy(versions("new@v1"), llm), "old": pipeline.Strategy(versions("old@v1"))}
    run = pipeline.enrich_by_version(cases, served_by=served, strategies=strategies,
                                     retrieve=lambda v: [[] for _ in range(len(v))],
                                     embed=lambda texts: np.zeros((len(texts), 4), dtype=np.float32))

    assert [r["event_id"] for r in run.rows] == IDS[:6]
    assert [r["model_version"] for r in run.rows] == [f"{s}@v1" for s in served]
    assert [r["route"] for r in run.rows] == ["llm" if s == "new" else "local" for s in served]
    assert asked == [[IDS[0], IDS[2], IDS[5]]] and run.llm_stats.cases == 3 and run.llm_calls == 3
    assert run.routes == {"llm": 3, "local": 3} and run.uncached == 6
    assert len({c["cache_key"] for c in run.new_cache_rows}) == 6  # the versions are in the keys


def test_a_transport_for_another_endpoint_keeps_the_tuning_but_never_the_api_key():
    bound = LLMResource(base_url="http://vllm:8000/v1", model="m", api_key="secret", max_retries=7)
    assert bound.with_endpoint("server", "http://vllm:8000/v1", "m") is bound
    same_server = bound.with_endpoint("server", "http://vllm:8000/v1/", "other")
    elsewhere = bound.with_endpoint("server", "http://127.0.0.1:8080/v1", "small")
    assert (same_server.api_key, same_server.model, same_server.max_retries) == ("secret", "other", 7)
    assert (elsewhere.api_key, elsewhere.base_url, elsewhere.max_retries) == (None, "http://127.0.0.1:8080/v1", 7)
    assert LLMResource().with_endpoint("offline", None, "m").resolved_backend() == "offline"
