-- One row per model version and prompt version: what each produced, side by side
-- (cases, days seen, mean confidence, label mix, fallback, gate and cache shares).
select
    model_version,
    prompt_version,
    count(*) as cases,
    count(distinct event_date) as days,
    min(cast(event_date as date)) as first_event_date,
    max(cast(event_date as date)) as last_event_date,
    avg(confidence) as avg_confidence,
    {% for label in var('labels') %}
    (count(*) filter (where label = '{{ label }}'))::double / count(*) as {{ label }}_share,
    {% endfor %}
    (count(*) filter (where route = 'fallback'))::double / count(*) as fallback_rate,
    (count(*) filter (where route = 'gate'))::double / count(*) as gate_rate,
    (count(*) filter (where served_from_cache))::double / count(*) as cache_rate,
    avg(llm_calls) as avg_llm_calls
from {{ source('lake', 'enriched_cases') }}
group by all
