"""`evaluation/samples`: a deterministic, redacted, incremental sample of the enriched cases."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import EVALUATION_SAMPLES
from llm_assets.lib.redaction import find_pii
from llm_assets.evaluation import sampling
from llm_assets.evaluation.assets import evaluation_samples
from tests.evaluation.lake import enriched_row, make_cases, write_cases

pytestmark = pytest.mark.integration

DAY = "2026-11-18"


def _enriched(cases) -> pl.DataFrame:
    return pl.DataFrame([enriched_row(c) for c in cases]).select(list(sampling.ENRICHED_COLUMNS))


def _no_samples() -> pl.DataFrame:
    return pl.DataFrame(schema={"event_id": pl.String, "label": pl.String})


def test_sample_fraction_is_a_stable_hash_of_the_event_id():
    assert sampling.sample_fraction("evt-1") == sampling.sample_fraction("evt-1")
    values = [sampling.sample_fraction(f"evt-{i}") for i in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.4 < sum(v < 0.5 for v in values) / len(values) < 0.6  # spread, not clustered


def test_selection_is_deterministic_takes_the_rate_and_a_minimum_per_label():
    enriched = _enriched(make_cases(DAY, 400, seed=3))
    first = sampling.select_new_samples(enriched, _no_samples(), rate=0.05, min_per_label=4)
    again = sampling.select_new_samples(enriched.sample(fraction=1.0, shuffle=True, seed=1), _no_samples(),
                                        rate=0.05, min_per_label=4)
    assert first["event_id"].to_list() == again["event_id"].to_list()
    by_rate = first.filter(pl.col("sampled_by") == "rate")
    assert (by_rate["sample_fraction"] < 0.05).all() and by_rate.height > 5
    counts = dict(first.group_by("label").len().iter_rows())
    assert set(counts) == set(enriched["label"]) and min(counts.values()) >= 4
    # A top-up takes the label's smallest hashes above the rate.
    top_ups = first.filter(pl.col("sampled_by") == "label_minimum")
    for (label,), group in top_ups.group_by("label"):
        rest = sampling.with_fractions(enriched.filter(pl.col("label") == label)).filter(
            pl.col("sample_fraction") >= 0.05).sort("sample_fraction")
        assert sorted(group["event_id"]) == sorted(rest["event_id"].head(group.height))


def test_samples_already_taken_count_towards_the_minimum_and_are_not_taken_twice():
    enriched = _enriched(make_cases(DAY, 200, seed=4))
    first = sampling.select_new_samples(enriched, _no_samples(), rate=0.02, min_per_label=3)
    second = sampling.select_new_samples(enriched, first.select("event_id", "label"), rate=0.02, min_per_label=3)
    assert second.is_empty()


def test_samples_are_redacted_incremental_and_a_sample_stays(delta):
    first_cases = make_cases(DAY, 120, seed=5)
    write_cases(delta, first_cases)
    instance = dg.DagsterInstance.ephemeral()
    run = {"ops": {"evaluation__samples": {"config": {"rate": 0.05, "min_per_label": 3}}}}
    result = dg.materialize([evaluation_samples], partition_key=DAY, resources={"delta": delta}, instance=instance,
                            run_config=run)
    assert result.success
    samples = delta.read(EVALUATION_SAMPLES)
    assert samples.height >= 5 * 3 and samples["event_id"].n_unique() == samples.height
    raw_by_id = {c.event_id: c.text for c in first_cases}
    # What analysts see is the case text with its PII replaced by placeholders, never the raw text.
    assert any(samples["text"][i] != raw_by_id[samples["event_id"][i]] for i in range(samples.height))
    assert all(not find_pii(t) for t in samples["text"])
    assert samples["text"].str.contains("<EMAIL>|<PHONE>|<CARD>|<IBAN>|<NATIONAL_ID>").any()
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"no_pii_in_samples": True, "samples_meet_label_minimum": True}

    # New cases of the same day arrive: they are sampled, and the samples taken stay as they were.
    write_cases(delta, make_cases(DAY, 200, seed=6, prefix="late"))
    assert dg.materialize([evaluation_samples], partition_key=DAY, resources={"delta": delta}, instance=instance,
                          run_config=run).success
    after = delta.read(EVALUATION_SAMPLES)
    kept = after.join(samples.select("event_id", pl.col("sampled_at").alias("before")), on="event_id")
    assert kept.height == samples.height and (kept["sampled_at"] == kept["before"]).all()
    assert after.filter(pl.col("event_id").str.starts_with("late")).height > 0
    materializations = instance.fetch_materializations(EVALUATION_SAMPLES, limit=1).records
    assert materializations[0].asset_materialization.metadata["samples_added"].value == after.height - samples.height
