"""The curated domain's definitions (resources are bound by the root definitions).

The checks of `curated/cases` are part of the asset (`check_specs`): it evaluates them itself
right after each write, on the Delta versions it read and wrote.
"""

import dagster as dg

from llm_assets.curated import assets

defs = dg.Definitions(assets=[assets.entity_signals, assets.upstream_exceptions, assets.curated_cases])
