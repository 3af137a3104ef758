"""The LLM layer, shared by `enriched/cases` (`enrichment/`) and the model lifecycle (`models/`).

Pure logic, no Dagster import: `types` (CaseContext in, CaseResult out, BatchStats), `prompts`
(versioned skills and their JSON schemas), `parsing` (defensive reading of model answers),
`local_rules` (the local strategy: rules plus the gate's classifier), `model_versions` (the one
place that names model and prompt versions), `cache` (the result cache key) and `pipeline` (what
decides each case, and its route). `llm_enricher` turns cases into requests and answers into
results over `LLMResource` (`llm_assets.resources.llm`), which only moves requests. PII is taken
out of every prompt and output by `llm_assets/lib/redaction.py`.
"""
