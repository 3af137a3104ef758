-- Cases per day, label and route (what decided each row: gate, llm, local or fallback), and how
-- many of them the result cache served instead of new work.
select
    event_date,
    label,
    route,
    count(*) as cases,
    count(*) filter (where served_from_cache) as served_from_cache,
    avg(confidence) as avg_confidence,
    avg(severity) as avg_severity
from {{ source('lake', 'enriched_cases') }}
group by all
