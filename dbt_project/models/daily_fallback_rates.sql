-- One row per day: how many cases fell back to the rules after the LLM failed (route
-- `fallback`), their share, the most frequent reason, and the cache's share of the day.
with cases as (
    select cast(event_date as date) as event_date, route, fallback_reason, served_from_cache
    from {{ source('lake', 'enriched_cases') }}
),

reasons as (
    select event_date, fallback_reason, count(*) as cases
    from cases
    where route = 'fallback'
    group by all
)

select
    cases.event_date,
    count(*) as cases,
    count(*) filter (where route = 'fallback') as fallback_cases,
    (count(*) filter (where route = 'fallback'))::double / count(*) as fallback_rate,
    count(*) filter (where served_from_cache) as served_from_cache,
    (count(*) filter (where served_from_cache))::double / count(*) as cache_rate,
    (
        select first(reasons.fallback_reason order by reasons.cases desc, reasons.fallback_reason)
        from reasons
        where reasons.event_date = cases.event_date
    ) as top_fallback_reason
from cases
group by cases.event_date
