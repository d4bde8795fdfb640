-- The user's own model on top of the package's marts: users per first arm of checkout_button.
select
    first_arm,
    count(distinct user_id) as users
from {{ ref('flagsmith__experiment_exposures') }}
where feature_name = 'checkout_button'
group by first_arm
