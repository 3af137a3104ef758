"""Definitions of the knowledge-base domain (resources are bound by `llm_assets.definitions`)."""

import dagster as dg

from llm_assets.knowledge_base.assets import kb_documents, kb_index

defs = dg.Definitions(assets=[kb_documents, kb_index])
