"""Distillation: LLM answers become training examples for the next embedding gate version."""
