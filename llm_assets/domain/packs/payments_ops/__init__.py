"""The payments operations pack (domain.yaml, prompts/, kb/, golden/) and its seeded sample generator."""
