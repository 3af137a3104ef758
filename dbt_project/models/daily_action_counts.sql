-- Proposed actions per day and verb, unpacked from the `actions` JSON list of each case
-- ({action, reason, approval_level}): how often each verb is proposed, on how many cases,
-- and how many of the proposals need more than an analyst's approval.
with proposals as (
    select
        cast(event_date as date) as event_date,
        event_id,
        unnest(from_json(actions, '[{"action": "VARCHAR", "reason": "VARCHAR", "approval_level": "VARCHAR"}]'))
            as proposal
    from {{ source('lake', 'enriched_cases') }}
)

select
    event_date,
    proposal.action as action,
    count(*) as proposals,
    count(distinct event_id) as cases,
    count(*) filter (where proposal.approval_level <> 'analyst') as above_analyst_approval
from proposals
group by all
