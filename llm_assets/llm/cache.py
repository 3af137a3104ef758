"""The enrichment result cache: keys and row shapes (the table lives in Delta).

A case is served from the cache when its redacted input, the model version, the prompt
version and the KB index version are all unchanged: bumping any of them invalidates
exactly the rows that used the old value. Each cached result keeps the route that decided it
(`source_route`: gate, llm or local; fallbacks are never cached), and a row served from the
cache carries that route with `served_from_cache` set.
"""

import hashlib

CACHED_FIELDS = ("summary", "label", "confidence", "actions", "severity", "retrieved_doc_ids",
                 "redacted_prompt_sha256")


def cache_key(input_sha256: str, model_version: str, prompt_version: str, kb_index_version: str) -> str:
    parts = "\x1f".join([input_sha256, model_version, prompt_version, kb_index_version])
    return hashlib.sha256(parts.encode()).hexdigest()
