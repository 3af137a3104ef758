"""Tests of the resources: the clients of external systems."""
