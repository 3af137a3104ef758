"""Sensors: the event-driven edges of the graph (Kafka offsets -> runs)."""
