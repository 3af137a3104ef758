"""Kafka ingest: `events.raw` -> `raw/events` (daily, Delta) and `raw/rejected_events` (dead letter)."""
