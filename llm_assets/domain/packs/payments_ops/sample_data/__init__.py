"""Seeded sample data: Kafka events with planted PII and malformed messages, entity
signals, exceptions, a knowledge-base corpus, and golden labelled sets."""
