-- Cases per day and label, with the label's share of the day and its mean confidence.
with counts as (
    select
        cast(event_date as date) as event_date,
        label,
        count(*) as cases,
        avg(confidence) as avg_confidence
    from {{ source('lake', 'enriched_cases') }}
    group by all
)

select
    event_date,
    label,
    cases,
    cases::double / sum(cases) over (partition by event_date) as share_of_day,
    avg_confidence
from counts
