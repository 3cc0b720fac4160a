{{ config(meta={'dagster': {'ref': {'name': 'fct_events'}}}) }}
-- Invariant: every event of a stitched visitor carries the stitched user (earlier anonymous ones too).
select f.event_id, f.stitched_user_id, i.user_id
from {{ ref('fct_events') }} f
inner join {{ ref('int_identities_stitched') }} i
    on i.tenant_id = f.tenant_id and i.anonymous_id = f.anonymous_id
where f.user_id is null and f.stitched_user_id is distinct from i.user_id
