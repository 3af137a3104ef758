-- One row per ISO week (Monday start): volumes through the layers, what decided the cases,
-- mean confidence, the most frequent label and the escalations proposed. Built from the daily
-- models; the current week's row grows until the week ends.
with coverage as (
    select
        date_trunc('week', event_date)::date as week_start,
        sum(raw_events)::bigint as raw_events,
        sum(curated_cases)::bigint as curated_cases,
        sum(enriched_cases)::bigint as enriched_cases
    from {{ ref('daily_pipeline_coverage') }}
    group by all
),

routes as (
    select
        date_trunc('week', event_date)::date as week_start,
        sum(cases)::bigint as cases,
        (sum(cases) filter (where route = 'gate'))::bigint as gate_cases,
        (sum(cases) filter (where route = 'llm'))::bigint as llm_cases,
        (sum(cases) filter (where route = 'local'))::bigint as local_cases,
        (sum(cases) filter (where route = 'fallback'))::bigint as fallback_cases,
        sum(served_from_cache)::bigint as served_from_cache,
        sum(llm_calls)::bigint as llm_calls
    from {{ ref('daily_route_rates') }}
    group by all
),

labels as (
    select
        week_start,
        first(label order by cases desc, label) as top_label,
        sum(confidence_sum) / nullif(sum(cases) filter (where confidence_sum is not null), 0) as avg_confidence
    from (
        select
            date_trunc('week', event_date)::date as week_start,
            label,
            sum(cases)::bigint as cases,
            sum(avg_confidence * cases) as confidence_sum
        from {{ ref('daily_label_counts') }}
        group by all
    )
    group by week_start
),

escalations as (
    select date_trunc('week', event_date)::date as week_start, sum(proposals)::bigint as escalations_proposed
    from {{ ref('daily_action_counts') }}
    where action = 'escalate'
    group by all
)

select
    coverage.week_start,
    coverage.raw_events,
    coverage.curated_cases,
    coverage.enriched_cases,
    coverage.enriched_cases::double / nullif(coverage.curated_cases, 0) as enrichment_coverage,
    coalesce(routes.gate_cases, 0)::double / nullif(routes.cases, 0) as gate_rate,
    coalesce(routes.llm_cases, 0)::double / nullif(routes.cases, 0) as llm_rate,
    coalesce(routes.local_cases, 0)::double / nullif(routes.cases, 0) as local_rate,
    coalesce(routes.fallback_cases, 0)::double / nullif(routes.cases, 0) as fallback_rate,
    coalesce(routes.served_from_cache, 0)::double / nullif(routes.cases, 0) as cache_rate,
    coalesce(routes.llm_calls, 0) as llm_calls,
    labels.avg_confidence,
    labels.top_label,
    coalesce(escalations.escalations_proposed, 0) as escalations_proposed
from coverage
left join routes using (week_start)
left join labels using (week_start)
left join escalations using (week_start)
