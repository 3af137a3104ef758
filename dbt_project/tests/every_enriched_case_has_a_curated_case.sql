-- An enriched case whose event_id is not in curated/cases came from nowhere: a write to the
-- wrong table, or a curated partition replaced without its enrichment. Reported as a check on
-- daily_pipeline_coverage, the model that counts both layers (the depends_on line makes the
-- test run with that model; the meta tells Dagster where to attach it).
-- depends_on: {{ ref('daily_pipeline_coverage') }}
{{ config(meta={'dagster': {'ref': {'name': 'daily_pipeline_coverage'}}}) }}

select enriched.event_id, enriched.event_date
from {{ source('lake', 'enriched_cases') }} as enriched
anti join {{ source('lake', 'curated_cases') }} as curated
    on curated.event_id = enriched.event_id
