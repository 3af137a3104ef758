"""Tests of the Kafka ingest domain."""
