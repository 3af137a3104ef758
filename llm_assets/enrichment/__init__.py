"""Enrichment: the LLM layer around `enriched/cases`.

Pure logic, no Dagster import: `types` (CaseContext in, CaseResult out, BatchStats), `redaction`
(PII out of every prompt and output), `prompts` (versioned skills and their JSON schemas) and
`parsing` (defensive reading of model answers). The `LLMResource` that sends prompts lives in
`llm_assets.resources.llm`.
"""
