"""Enrichment: the LLM layer around `enriched/cases`.

Pure logic, no Dagster import: `types` (CaseContext in, CaseResult out, BatchStats), `redaction`
(PII out of every prompt and output), `prompts` (versioned skills and their JSON schemas),
`parsing` (defensive reading of model answers), `local_rules` (the local strategy: rules plus the
gate's classifier), `model_versions` (the one place that names model and prompt versions) and
`pipeline` (what decides each case, and its route), `serving` (which production model version
decides which case: promotion, gradual rollout, rows left behind). `llm_enricher` turns cases into requests and
answers into results over `LLMResource` (`llm_assets.resources.llm`), which only moves requests.
"""
