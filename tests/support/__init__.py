"""Test support shared by the test packages: the OpenAI-compatible stand-in for vLLM."""
