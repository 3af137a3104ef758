"""The rules of `no_regression_vs_production`, as a pure function of two versions' golden results.

A candidate fails when, on the golden cases both versions were evaluated on (same `event_id`,
same redacted input, same expected label):
- its macro-F1 is below production's by more than `tolerance` (0.02) AND the paired bootstrap
  95% interval of the difference lies entirely below zero (the drop is not resampling noise);
- a label's recall is below production's by more than `max_label_recall_drop` (0.05) AND (with
  `label_drop_needs_support`, the default) that label's paired interval lies below zero too;
  a handful of cases won and lost in both directions moves neither interval below zero;
- or an absolute floor is missed: valid-JSON rate < 0.99, allowed-action rate, accuracy,
  macro-F1, PII found in outputs.
The first version ever (no production) is judged on the floors alone. Pure: no Dagster import.
"""

from dataclasses import asdict, dataclass, field

import polars as pl

from llm_assets.models.evaluation import summarize
from llm_assets.models.statistics import PairedComparison, paired_bootstrap

PAIR_COLUMNS = ("event_id", "input_sha256", "expected_label")
MIN_PAIRED_SHARE = 0.9  # below it, production's evaluation is of another golden set: re-evaluate it


@dataclass(frozen=True)
class RegressionRules:
    tolerance: float = 0.02
    max_label_recall_drop: float = 0.05
    label_drop_needs_support: bool = True
    min_valid_json_rate: float = 0.99
    min_allowed_action_rate: float = 0.99
    min_accuracy: float = 0.6
    min_macro_f1: float = 0.6
    max_pii_outputs: int = 0
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass
class Verdict:
    passed: bool
    failures: list[str]
    candidate: dict
    production: dict | None = None
    production_version: str | None = None
    comparison: PairedComparison | None = None
    paired_cases: int = 0
    rules: RegressionRules = field(default_factory=RegressionRules)

    @property
    def judged_on(self) -> str:
        return "floors only (no production version yet)" if self.production is None else "production and floors"


def floor_failures(summary: dict, rules: RegressionRules) -> list[str]:
    failures = []
    if summary["valid_json_rate"] < rules.min_valid_json_rate:
        failures.append(f"valid-JSON rate {summary['valid_json_rate']:.4f} < {rules.min_valid_json_rate}")
    if summary["allowed_action_rate"] < rules.min_allowed_action_rate:
        failures.append(f"allowed-action rate {summary['allowed_action_rate']:.4f} < {rules.min_allowed_action_rate}")
    if summary["accuracy"] < rules.min_accuracy:
        failures.append(f"accuracy {summary['accuracy']:.4f} < floor {rules.min_accuracy}")
    if summary["macro_f1"] < rules.min_macro_f1:
        failures.append(f"macro-F1 {summary['macro_f1']:.4f} < floor {rules.min_macro_f1}")
    if summary["pii_outputs"] > rules.max_pii_outputs:
        failures.append(f"{summary['pii_outputs']} outputs with PII > {rules.max_pii_outputs}")
    return failures


def paired_rows(candidate: pl.DataFrame, production: pl.DataFrame) -> pl.DataFrame:
    """The golden cases both versions answered: `expected_label`, `label_candidate`, `label_production`."""
    return (candidate.select(*PAIR_COLUMNS, pl.col("label").alias("label_candidate"))
            .join(production.select(*PAIR_COLUMNS, pl.col("label").alias("label_production")), on=list(PAIR_COLUMNS))
            .sort("event_id"))


def judge(candidate: pl.DataFrame, production: pl.DataFrame | None, rules: RegressionRules = RegressionRules(),
          *, production_version: str | None = None) -> Verdict:
    """The verdict on a candidate's per-case rows against production's (None: the first version ever)."""
    cand_summary = summarize(candidate)
    failures = floor_failures(cand_summary, rules)
    if production is None or production.is_empty():
        return Verdict(passed=not failures, failures=failures, candidate=cand_summary, rules=rules)

    pairs = paired_rows(candidate, production)
    verdict = Verdict(passed=False, failures=failures, candidate=cand_summary, production=summarize(production),
                      production_version=production_version, paired_cases=pairs.height, rules=rules)
    if pairs.height < MIN_PAIRED_SHARE * candidate.height or pairs.is_empty():
        failures.append(f"only {pairs.height} of {candidate.height} golden cases were also evaluated for production "
                        f"{production_version}: re-evaluate it on this golden set first")
        return verdict
    comparison = paired_bootstrap(
        pairs["expected_label"].to_list(), pairs["label_candidate"].to_list(), pairs["label_production"].to_list(),
        resamples=rules.resamples, confidence=rules.confidence, seed=rules.seed)
    verdict.comparison = comparison
    diff = comparison.macro_f1_diff
    if diff.estimate < -rules.tolerance and diff.below_zero():
        failures.append(f"macro-F1 {diff.estimate:+.4f} vs production (tolerance {rules.tolerance}), "
                        f"{comparison.confidence:.0%} interval [{diff.low:+.4f}, {diff.high:+.4f}] below zero")
    for label, interval in comparison.recall_diff.items():
        if interval.estimate < -rules.max_label_recall_drop and (interval.below_zero()
                                                                or not rules.label_drop_needs_support):
            failures.append(f"recall of {label} {interval.estimate:+.4f} vs production (max drop "
                            f"{rules.max_label_recall_drop}), interval [{interval.low:+.4f}, {interval.high:+.4f}]")
    verdict.passed = not failures
    return verdict


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def side_by_side(verdict: Verdict, candidate_version: str) -> list[tuple]:
    """(metric, candidate, production, difference [interval], rule) rows for the check's table."""
    cand, prod, comp, rules = verdict.candidate, verdict.production or {}, verdict.comparison, verdict.rules
    rows = []
    macro = comp.macro_f1_diff.as_text() if comp else ""
    rows.append(("macro-F1", _fmt(cand["macro_f1"]), _fmt(prod.get("macro_f1")), macro,
                 f"drop > {rules.tolerance} with interval below 0; floor {rules.min_macro_f1}"))
    rows.append(("accuracy", _fmt(cand["accuracy"]), _fmt(prod.get("accuracy")),
                 _diff(cand["accuracy"], prod.get("accuracy")), f"floor {rules.min_accuracy}"))
    for label, metrics in cand["per_label"].items():
        interval = comp.recall_diff.get(label).as_text() if comp and label in comp.recall_diff else ""
        rows.append((f"recall {label}", _fmt(metrics["recall"]),
                     _fmt(prod.get("per_label", {}).get(label, {}).get("recall")), interval,
                     f"drop > {rules.max_label_recall_drop}" + (" with interval below 0"
                                                                 if rules.label_drop_needs_support else "")))
    for label, metrics in cand["per_label"].items():
        production_precision = prod.get("per_label", {}).get(label, {}).get("precision")
        rows.append((f"precision {label}", _fmt(metrics["precision"]), _fmt(production_precision),
                     _diff(metrics["precision"], production_precision), "reported"))
    rows.append(("valid-JSON rate", _fmt(cand["valid_json_rate"]), _fmt(prod.get("valid_json_rate")),
                 _diff(cand["valid_json_rate"], prod.get("valid_json_rate")), f">= {rules.min_valid_json_rate}"))
    rows.append(("allowed-action rate", _fmt(cand["allowed_action_rate"]), _fmt(prod.get("allowed_action_rate")),
                 _diff(cand["allowed_action_rate"], prod.get("allowed_action_rate")),
                 f">= {rules.min_allowed_action_rate}"))
    rows.append(("outputs with PII", _fmt(cand["pii_outputs"]), _fmt(prod.get("pii_outputs")), "",
                 f"<= {rules.max_pii_outputs}"))
    for metric in ("latency_p50_s", "latency_p95_s", "tokens_per_case", "llm_calls_per_case"):
        rows.append((metric, _fmt(cand[metric]), _fmt(prod.get(metric)), _diff(cand[metric], prod.get(metric)),
                     "reported"))
    header = ("version", candidate_version, verdict.production_version or "(none)", "", verdict.judged_on)
    return [header, *rows]


def _diff(candidate, production) -> str:
    return "" if production is None or candidate is None else f"{candidate - production:+.4f}"


def rules_metadata(rules: RegressionRules) -> dict:
    return asdict(rules)
