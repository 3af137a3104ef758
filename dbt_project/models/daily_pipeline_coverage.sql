-- One row per day across the layers: raw events, curated cases, enriched cases, and how much
-- of the curated day the enrichment has covered so far.
with raw as (
    select cast(event_date as date) as event_date, count(*) as raw_events
    from {{ source('lake', 'raw_events') }}
    group by all
),

curated as (
    select
        cast(event_date as date) as event_date,
        count(*) as curated_cases,
        count(*) filter (where is_exception) as exception_cases
    from {{ source('lake', 'curated_cases') }}
    group by all
),

enriched as (
    select cast(event_date as date) as event_date, count(*) as enriched_cases
    from {{ source('lake', 'enriched_cases') }}
    group by all
)

select
    event_date,
    coalesce(raw_events, 0) as raw_events,
    coalesce(curated_cases, 0) as curated_cases,
    coalesce(exception_cases, 0) as exception_cases,
    coalesce(enriched_cases, 0) as enriched_cases,
    coalesce(curated_cases, 0) - coalesce(enriched_cases, 0) as cases_not_enriched,
    coalesce(enriched_cases, 0)::double / nullif(curated_cases, 0) as enrichment_coverage
from raw
full outer join curated using (event_date)
full outer join enriched using (event_date)
