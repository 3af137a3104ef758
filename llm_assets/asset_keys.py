"""Every asset key and Delta table name of llm-assets, declared once (ARCHITECTURE section 1).

Assets, checks, the CLI and the tests import these; `DeltaLakeStorage` maps a key to its
table path (`{DELTA_ROOT}/{key prefix}/{key name}`), so "table path = asset key" lives in one place.
"""

import dagster as dg

RAW_EVENTS = dg.AssetKey(["raw", "events"])
REJECTED_EVENTS = dg.AssetKey(["raw", "rejected_events"])
ENTITY_SIGNALS = dg.AssetKey(["features", "entity_signals"])
EXCEPTIONS = dg.AssetKey(["signals", "exceptions"])
CURATED_CASES = dg.AssetKey(["curated", "cases"])
KB_DOCUMENTS = dg.AssetKey(["kb", "documents"])
KB_INDEX = dg.AssetKey(["kb", "index"])
EMBEDDING_GATE = dg.AssetKey(["models", "embedding_gate"])
GATE_TRAINING_EXAMPLES = dg.AssetKey(["models", "gate_training_examples"])
MODELS_EVALUATION = dg.AssetKey(["models", "evaluation"])
MODELS_PRODUCTION = dg.AssetKey(["models", "production"])
ENRICHED_CASES = dg.AssetKey(["enriched", "cases"])
EVALUATION_RATINGS = dg.AssetKey(["evaluation", "ratings"])
EVALUATION_SAMPLES = dg.AssetKey(["evaluation", "samples"])
EVALUATION_QUALITY_METRICS = dg.AssetKey(["evaluation", "quality_metrics"])
EVALUATION_GOLDEN_CASES = dg.AssetKey(["evaluation", "golden_cases"])
DRIFT_REPORT = dg.AssetKey(["monitoring", "drift_report"])
CASE_TICKETS = dg.AssetKey(["monitoring", "case_tickets"])
GATE_PRECISION = dg.AssetKey(["monitoring", "gate_precision"])

# Internal tables that are not assets of their own, named like one so they live beside them.
RESULT_CACHE = dg.AssetKey(["enrichment", "result_cache"])
# What of enriched/cases is audited (which bundle) and published to cases.enriched (which offset).
ENRICHED_OUTBOX = dg.AssetKey(["enrichment", "outbox"])
REJECTED_RATINGS = dg.AssetKey(["evaluation", "rejected_ratings"])
IMPORTED_RATING_FILES = dg.AssetKey(["evaluation", "imported_rating_files"])
# The gate on live traffic (gate/health.py): one row per audited gated case (an LLM's or an analyst's
# answer), and the labels a gate version stopped serving, with the numbers that decided it.
GATE_AUDITS = dg.AssetKey(["models", "gate_audits"])
GATE_SHUTOFFS = dg.AssetKey(["models", "gate_shutoffs"])
