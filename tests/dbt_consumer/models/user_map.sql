-- The user's own identity map: Flagsmith identities (anonymous ids here) to the warehouse's user
-- key. The package's var flagsmith__identity_map names this model, so dbt builds it first.
select * from (
    values
    ('user_0', 'customer_100'),
    ('user_1', 'customer_101'),
    ('user_2', 'customer_100')
) as user_map (anonymous_id, customer_id)
