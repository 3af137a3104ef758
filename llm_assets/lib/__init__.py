"""Shared pure helpers, no Dagster asset: `redaction` (PII out of every prompt, output and stored
text) and `plots` (small PNG charts as markdown images for materialization metadata)."""
