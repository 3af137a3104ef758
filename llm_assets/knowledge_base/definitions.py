"""Definitions of the knowledge-base domain (resources are bound by `llm_assets.definitions`)."""

import dagster as dg

from llm_assets.knowledge_base.assets import kb_documents, kb_index
from llm_assets.knowledge_base.checks import kb_chunk_ids_are_unique

defs = dg.Definitions(assets=[kb_documents, kb_index], asset_checks=[kb_chunk_ids_are_unique])
