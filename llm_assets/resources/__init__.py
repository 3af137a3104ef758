"""Dagster resources: thin, configurable clients over the real components."""
