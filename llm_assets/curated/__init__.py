"""Curated cases: raw events joined with entity signals and upstream exceptions."""
