-- What decided each day's cases (route: gate, llm, local, fallback), as counts and shares,
-- and how many of each the result cache served instead of new work.
with counts as (
    select
        cast(event_date as date) as event_date,
        route,
        count(*) as cases,
        count(*) filter (where served_from_cache) as served_from_cache,
        coalesce(sum(llm_calls), 0)::bigint as llm_calls
    from {{ source('lake', 'enriched_cases') }}
    group by all
)

select
    event_date,
    route,
    cases,
    cases::double / sum(cases) over (partition by event_date) as share_of_day,
    served_from_cache,
    llm_calls
from counts
