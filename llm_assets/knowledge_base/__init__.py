"""The knowledge base: `kb/documents` (chunks in Delta) and the blue-green `kb/index` in Milvus."""
