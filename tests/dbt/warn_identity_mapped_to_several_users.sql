{{ config(severity='warn', enabled=var('flagsmith__identity_map', none) is not none) }}

-- The identity map (var flagsmith__identity_map) maps these identities to more than one user
-- key. The experiment marts take the smallest key; fix the map if that is not the right one.

with

mapped_identities as (
    {{ flagsmith_warehouse.mapped_identities_sql() }}
)

select identity, user_id as smallest_user_id, user_id_count
from mapped_identities
where user_id_count > 1
