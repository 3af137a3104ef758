"""Enrichment: the `enriched/cases` asset and what it writes beside the table.

`assets` (`enriched/cases`: which cases to decide, by which model version, MERGE, checks),
`serving` (which production model version decides which case: promotion, gradual rollout, rows
left behind), `quality` (the checks' figures), `audit` and `audit_verification` (a signed bundle
per date), `outbox` (publishing exactly the written rows to Kafka). The LLM layer it drives is
`llm_assets/llm/`, the embedding gate `llm_assets/gate/`.
"""
