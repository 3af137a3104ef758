"""Delta Lake reads and writes: the one IO path every table of llm-assets goes through."""
