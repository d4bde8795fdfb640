-- The user's own model on top of the package's marts: identities per first variant.
select
    first_variant,
    count(*) as identities
from {{ ref('flagsmith__first_exposures') }}
where feature_name = 'checkout_button'
group by first_variant
