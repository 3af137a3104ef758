-- Cases per day, label and route: how much of the day the gate, the cache and the LLM handled.
select
    event_date,
    label,
    route,
    count(*) as cases,
    avg(confidence) as avg_confidence,
    avg(severity) as avg_severity
from {{ source('lake', 'enriched_cases') }}
group by all
