"""`evaluation/golden_cases`: the pack's seed cases and a hashed share of ratings, deduplicated,
versioned by content and split; and nothing trains on them (the gate leaves them out)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import EVALUATION_GOLDEN_CASES, EVALUATION_RATINGS
from llm_assets.gate.distillation import gate_training_examples
from llm_assets.domain import current_pack
from llm_assets.domain.golden import read_labelled
from llm_assets.gate.assets import embedding_gate
from llm_assets.evaluation.golden_cases import (
    GOLDEN_SCHEMA,
    bucket,
    build_golden,
    evaluation_golden_cases,
    golden_version,
    rated_cases,
)
from llm_assets.evaluation.ratings import RATINGS_SCHEMA
from llm_assets.knowledge_base.assets import kb_documents
from llm_assets.resources.embedder import EmbedderResource
from tests.support.pipeline import artifact_resources

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _seed(rows: list[tuple[str, str, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame([{"event_id": e, "payload_raw": t, "partner_id": "", "source_system": "", "label": lab,
                          "split": split} for e, t, lab, split in rows],
                        schema={k: GOLDEN_SCHEMA[k] for k in ("event_id", "payload_raw", "partner_id",
                                                                "source_system", "label", "split")})


def _ratings(n: int, *, label: str = "other", prefix: str = "rated") -> pl.DataFrame:
    rows = [{"event_id": f"{prefix}-{i:03d}", "event_date": "2026-12-01", "analyst": "ana", "label_correct": True,
             "correct_label": None, "model_label": label, "label": label, "actions_proposed": [],
             "actions_accepted": [], "rated_at": T0 + timedelta(minutes=i),
             "text": f"Customer {i} asks how to update the postal address on invoice batch {i * 7}",
             "model_version": "m", "prompt_version": "p", "source": "kafka", "source_ref": f"t:0:{i}",
             "imported_at": T0} for i in range(n)]
    return pl.DataFrame(rows, schema=RATINGS_SCHEMA)


def test_seed_splits_are_kept_others_hashed_and_duplicates_dropped():
    seed = _seed([("a", "Card used in five countries", "fraud_suspected", "held_out"),
                  ("b", "Partner fee differs", "partner_mismatch", None),
                  ("c", "card used in  five COUNTRIES", "fraud_suspected", "evaluation")])  # same text as `a`
    rated = rated_cases(_ratings(40), rating_share_percent=50, seed_cases=100)  # the cap far away
    golden = build_golden(seed, rated, held_out_percent=30)
    assert golden.filter(pl.col("event_id") == "a")["split"].to_list() == ["held_out"]
    assert "c" not in golden["event_id"].to_list()  # the text was already there (the seed first)
    b_split = "held_out" if bucket("b", "split") < 30 else "evaluation"
    assert golden.filter(pl.col("event_id") == "b")["split"].to_list() == [b_split]
    expected_rated = {f"rated-{i:03d}" for i in range(40) if bucket(f"rated-{i:03d}", "rating") < 50}
    assert set(golden.filter(pl.col("origin") == "rating")["event_id"]) == expected_rated and 0 < len(expected_rated) < 40
    # Deterministic: the same inputs, the same version; a label changed, another version.
    again = build_golden(seed, rated_cases(_ratings(40), 50, seed_cases=100), held_out_percent=30)
    assert golden_version(again) == golden_version(golden)
    relabelled = build_golden(seed, rated_cases(_ratings(40, label="partner_mismatch"), 50, seed_cases=100),
                              held_out_percent=30)
    assert golden_version(relabelled) != golden_version(golden)


def test_no_analyst_supplies_more_than_their_share_and_disputes_wait_for_a_second_opinion():
    one = _ratings(40)                                   # all by ana
    capped = rated_cases(one, rating_share_percent=100, seed_cases=20, max_analyst_share=0.25)
    assert capped.height == int(0.25 * (20 + 40)) and set(capped["analyst"]) == {"ana"}
    shared = pl.concat([one.head(20), one.tail(20).with_columns(pl.lit("bo").alias("analyst"))])
    both = rated_cases(shared, rating_share_percent=100, seed_cases=20, max_analyst_share=0.25)
    assert both.group_by("analyst").len().sort("analyst").rows() == [("ana", 15), ("bo", 15)]

    disputed = _ratings(4).with_columns(pl.lit(False).alias("label_correct"), pl.lit("fraud_suspected").alias("label"))
    assert rated_cases(disputed, 100, seed_cases=100).is_empty()  # one voice against the model: in review
    seconded = pl.concat([disputed, disputed.with_columns(pl.lit("bo").alias("analyst"))])
    assert set(rated_cases(seconded, 100, seed_cases=100)["label"]) == {"fraud_suspected"}


def test_golden_cases_hold_the_packs_seed_and_rated_cases_and_the_gate_never_trains_on_them(tmp_path, delta,
                                                                                              monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    ratings = _ratings(30)
    delta.overwrite(EVALUATION_RATINGS, ratings)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([evaluation_golden_cases], resources={"delta": delta, **artifact_resources(tmp_path)},
                          instance=instance).success
    golden = delta.read(EVALUATION_GOLDEN_CASES)
    pack = current_pack()
    seed = read_labelled(pack, pack.spec.sources.golden)
    assert set(seed["event_id"]) <= set(golden["event_id"])
    golden_rated = set(golden.filter(pl.col("origin") == "rating")["event_id"])
    assert 0 < len(golden_rated) < 30
    # Nothing changed: nothing recorded (the ratings import's cron runs it every 10 minutes).
    again = dg.materialize([evaluation_golden_cases], resources={"delta": delta, **artifact_resources(tmp_path)},
                           instance=instance)
    assert again.success and not again.asset_materializations_for_node("evaluation__golden_cases")

    result = dg.materialize(
        [kb_documents, embedding_gate, gate_training_examples, evaluation_golden_cases],
        selection=[dg.AssetKey.from_user_string(k) for k in ("kb/documents", "models/embedding_gate")],
        resources={"delta": delta, "embedder": EmbedderResource(), **artifact_resources(tmp_path)},
        instance=instance)
    meta = result.asset_materializations_for_node("models__embedding_gate")[0].metadata
    sources = meta["training_sources"].value
    assert sources["analyst_ratings"] == 30 - len(golden_rated)  # the golden ones are left out
