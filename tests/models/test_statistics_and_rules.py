"""The statistics and rules of `no_regression_vs_production`, on constructed golden results."""

import random

import polars as pl
import pytest

from llm_assets.domain import current_pack

pytestmark = pytest.mark.unit

LABELS = current_pack().labels
from llm_assets.models.evaluation import EVALUATION_SCHEMA
from llm_assets.models.regression import RegressionRules, judge
from llm_assets.models.statistics import macro_f1, paired_bootstrap


def golden_truth(n: int = 200, seed: int = 3) -> list[str]:
    return random.Random(seed).choices(LABELS, k=n)


def rows(truth: list[str], predicted: list[str], version: str = "v") -> pl.DataFrame:
    n = len(truth)
    return pl.DataFrame({
        "model_version": [version] * n, "event_id": [f"gold-{i:05d}" for i in range(n)], "expected_label": truth,
        "label": predicted, "label_correct": [t == p for t, p in zip(truth, predicted)], "route": ["llm"] * n,
        "valid_json": [True] * n, "actions_allowed": [True] * n, "pii_in_output": [[] for _ in range(n)],
        "latency_s": [0.1] * n, "prompt_tokens": [100] * n, "completion_tokens": [50] * n, "llm_calls": [1] * n,
        "input_sha256": [f"sha-{i}" for i in range(n)],
    }, schema={k: EVALUATION_SCHEMA[k] for k in (
        "model_version", "event_id", "expected_label", "label", "label_correct", "route", "valid_json", "actions_allowed",
        "pii_in_output", "latency_s", "prompt_tokens", "completion_tokens", "llm_calls", "input_sha256")})


def with_errors(truth: list[str], indices: list[int]) -> list[str]:
    """The truth with the cases at `indices` answered as the next label."""
    out = list(truth)
    for i in indices:
        out[i] = LABELS[(LABELS.index(truth[i]) + 1) % len(LABELS)]
    return out


@pytest.fixture
def truth():
    return golden_truth()


@pytest.fixture
def production(truth):
    # A realistic production version: 20 of 200 golden cases wrong, spread over the labels.
    return with_errors(truth, list(range(0, 200, 10)))


def test_bootstrap_point_estimate_is_sklearns_macro_f1_difference(truth, production):
    candidate = with_errors(truth, list(range(5, 200, 20)))
    labels = sorted(set(truth))
    comparison = paired_bootstrap(truth, candidate, production, resamples=500)
    expected = macro_f1(truth, candidate, labels) - macro_f1(truth, production, labels)
    assert comparison.macro_f1_diff.estimate == pytest.approx(expected, abs=1e-6)
    assert comparison.macro_f1_diff.low <= comparison.macro_f1_diff.estimate <= comparison.macro_f1_diff.high


def test_identical_versions_have_a_zero_width_interval(truth, production):
    comparison = paired_bootstrap(truth, production, production, resamples=300)
    assert (comparison.macro_f1_diff.low, comparison.macro_f1_diff.high) == (0.0, 0.0)


def test_rotated_labels_fail_on_every_rule(truth, production):
    rotated = with_errors(truth, list(range(len(truth))))
    verdict = judge(rows(truth, rotated), rows(truth, production), production_version="prod@v1")
    assert not verdict.passed
    assert any(f.startswith("macro-F1 -") and "below zero" in f for f in verdict.failures)
    assert sum(f.startswith("recall of") for f in verdict.failures) == len(set(truth))
    assert verdict.comparison.macro_f1_diff.high < 0


def test_a_handful_of_differences_in_both_directions_is_not_flagged(truth, production):
    # The candidate fixes 4 of production's errors and makes 4 new ones on other labels' cases.
    fixed = list(range(0, 40, 10))
    new_errors = [i for i in range(1, 200, 7) if i % 10][:4]
    candidate = with_errors(truth, sorted(set(range(0, 200, 10)) - set(fixed) | set(new_errors)))
    assert sum(c != p for c, p in zip(candidate, production)) == 8

    verdict = judge(rows(truth, candidate), rows(truth, production), production_version="prod@v1")

    assert verdict.passed, verdict.failures
    assert verdict.comparison.macro_f1_diff.low < 0 < verdict.comparison.macro_f1_diff.high


def test_a_candidate_worse_on_one_label_only_is_flagged_by_the_per_label_rule(truth, production):
    target = "fraud_suspected"
    cases = [i for i, t in enumerate(truth) if t == target and production[i] == t]
    candidate = with_errors(production, cases[:8])  # 8 more fraud cases missed, everything else as production

    verdict = judge(rows(truth, candidate), rows(truth, production), production_version="prod@v1")

    assert not verdict.passed
    recall_failures = [f for f in verdict.failures if f.startswith("recall of")]
    assert len(recall_failures) == 1 and recall_failures[0].startswith(f"recall of {target}")
    assert verdict.comparison.recall_diff[target].high < 0


def test_the_per_label_rule_without_statistical_support_flags_small_drops(truth, production):
    # The same 2-case drop on one label: held back by default, flagged when support is not required.
    target = "routing_error"
    cases = [i for i, t in enumerate(truth) if t == target and production[i] == t][:2]
    candidate = with_errors(production, cases)
    support = sum(t == target for t in truth)
    assert 2 / support > 0.05

    assert judge(rows(truth, candidate), rows(truth, production)).passed
    strict = judge(rows(truth, candidate), rows(truth, production), RegressionRules(label_drop_needs_support=False))
    assert not strict.passed and strict.failures[0].startswith(f"recall of {target}")


def test_the_first_version_is_judged_on_the_floors_alone(truth, production):
    verdict = judge(rows(truth, production), None)
    assert verdict.passed and verdict.production is None and verdict.comparison is None
    assert "floors only" in verdict.judged_on

    poor = judge(rows(truth, with_errors(truth, list(range(0, 200, 2)))), None)
    assert not poor.passed and any("floor" in f for f in poor.failures)


def test_invalid_json_and_pii_fail_the_floors(truth, production):
    candidate = rows(truth, production).with_columns(
        valid_json=pl.Series([i >= 3 for i in range(len(truth))]),
        pii_in_output=pl.Series([["EMAIL"] if i == 7 else [] for i in range(len(truth))]))
    verdict = judge(candidate, rows(truth, production))
    assert not verdict.passed
    assert any(f.startswith("valid-JSON rate 0.985") for f in verdict.failures)
    assert any("outputs with PII" in f for f in verdict.failures)


def test_production_evaluated_on_other_cases_is_not_compared(truth, production):
    other = rows(truth, production).with_columns(input_sha256=pl.lit("another golden set"))
    verdict = judge(rows(truth, production), other, production_version="prod@v1")
    assert not verdict.passed and "re-evaluate it" in verdict.failures[-1]
