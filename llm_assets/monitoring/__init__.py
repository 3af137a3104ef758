"""Monitoring: drift of the enriched cases against a reference window, and case tickets.

Pure logic, no Dagster import: `drift` (the statistics), `plots` (PNG figures of a report),
`tickets` (which cases get a ticket and what it says). `assets` binds them to Delta, the
embedder and the case tool.
"""
