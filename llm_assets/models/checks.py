"""The blocking check `no_regression_vs_production` on `models/evaluation` (one evaluation per
model version partition); the rules are `regression.judge`'s.

A check of its own (not a by-product of the asset): it reads the stored golden results of the
candidate and of the production version, so after a promotion a candidate can be judged again
against the new production without evaluating it again (execute the check alone in the UI).
"""

import json

import dagster as dg
from pydantic import Field

from llm_assets.asset_keys import MODELS_EVALUATION
from llm_assets.metadata import markdown_table
from llm_assets.models import production
from llm_assets.models.assets import CHECK_NAME, evaluated_rows
from llm_assets.models.regression import RegressionRules, judge, rules_metadata, side_by_side
from llm_assets.partitions import model_versions
from llm_assets.resources.delta import DeltaLakeStorage

_DEFAULTS = RegressionRules()


class RegressionCheckConfig(dg.Config):
    tolerance: float = Field(default=_DEFAULTS.tolerance, description="macro-F1 drop vs production allowed")
    max_label_recall_drop: float = Field(default=_DEFAULTS.max_label_recall_drop,
                                         description="per-label recall drop vs production allowed")
    label_drop_needs_support: bool = Field(default=_DEFAULTS.label_drop_needs_support,
                                           description="a label's recall drop fails only when its paired "
                                                       "interval is below zero too")
    min_valid_json_rate: float = Field(default=_DEFAULTS.min_valid_json_rate)
    min_allowed_action_rate: float = Field(default=_DEFAULTS.min_allowed_action_rate)
    min_accuracy: float = Field(default=_DEFAULTS.min_accuracy, description="absolute floor")
    min_macro_f1: float = Field(default=_DEFAULTS.min_macro_f1, description="absolute floor")
    max_pii_outputs: int = Field(default=_DEFAULTS.max_pii_outputs, description="golden outputs with PII allowed")
    resamples: int = Field(default=_DEFAULTS.resamples, description="paired bootstrap resamples")
    confidence: float = Field(default=_DEFAULTS.confidence, description="interval level")

    def rules(self) -> RegressionRules:
        return RegressionRules(**self.model_dump())


@dg.asset_check(
    asset=MODELS_EVALUATION,
    name=CHECK_NAME,
    blocking=True,
    partitions_def=model_versions,
    description="The candidate's golden-set results against the production version's on the same cases: fails "
                "on a macro-F1 drop beyond the tolerance (0.02) that the paired bootstrap 95% interval supports, "
                "a label's recall drop beyond 0.05 (interval below zero too), valid-JSON rate < 0.99, or a missed "
                "floor. The first version ever is judged on the floors alone. models/production promotes only "
                "a version whose latest evaluation of this check passed.",
)
def no_regression_vs_production(context: dg.AssetCheckExecutionContext, config: RegressionCheckConfig,
                                delta: DeltaLakeStorage) -> dg.AssetCheckResult:
    candidate_version = context.partition_key
    candidate = evaluated_rows(delta, candidate_version)
    if candidate.is_empty():
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={
            "failures": f"no golden results for {candidate_version}: materialize models/evaluation first"})
    current = production.current_production(delta)
    baseline = evaluated_rows(delta, current.version) if current.version else None
    if current.version and (baseline is None or baseline.is_empty()):
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={
            "production_version": current.version,
            "failures": f"production {current.version} has no golden results: evaluate it first"})
    verdict = judge(candidate, baseline, config.rules(), production_version=current.version)
    table = side_by_side(verdict, candidate_version)
    diff = verdict.comparison.macro_f1_diff if verdict.comparison else None
    metadata = {
        "candidate_version": candidate_version,
        "production_version": current.version or "",
        "judged_on": verdict.judged_on,
        "side_by_side": markdown_table(["metric", "candidate", "production", "difference [95% interval]", "rule"],
                                       table),
        "failures": "; ".join(verdict.failures) or "none",
        "candidate_macro_f1": verdict.candidate["macro_f1"],
        **({"production_macro_f1": verdict.production["macro_f1"]} if verdict.production else {}),
        "paired_cases": verdict.paired_cases,
        "rules": dg.MetadataValue.json(rules_metadata(verdict.rules)),
    }
    if diff is not None:
        metadata.update({"macro_f1_diff": diff.estimate, "macro_f1_diff_low": round(diff.low, 4),
                         "macro_f1_diff_high": round(diff.high, 4),
                         "recall_diff": dg.MetadataValue.json({lab: [i.estimate, round(i.low, 4), round(i.high, 4)]
                                                               for lab, i in verdict.comparison.recall_diff.items()})})
    context.log.info(f"{CHECK_NAME} {candidate_version} vs {current.version}: "
                     f"{'passed' if verdict.passed else 'FAILED'} {json.dumps(verdict.failures)}")
    return dg.AssetCheckResult(passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
