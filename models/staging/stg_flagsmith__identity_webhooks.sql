{{ config(
    materialized=flagsmith_warehouse.incremental_materialization(),
    incremental_strategy='flagsmith_replace_partitions',
    flagsmith_replace_by=['delivery_id'],
    flagsmith_repairs_unfinished_write=true,
    on_schema_change='fail',
    pre_hook="{{ flagsmith_warehouse.create_watermarks_table() }}",
    post_hook="{{ flagsmith_warehouse.record_watermark(this) }}",
) }}

{#- The only place the payload is parsed: once per delivery, into a typed value the list models
    unnest. Incremental by dlt load: the rows of every load not yet here are appended and stamped
    with this run's `transform_batch_at` (macros/incremental.sql explains how the marts use it).
    Only loads dlt has recorded as complete are taken, so a load id is either wholly here or not
    at all, even when its jobs commit one by one or another loader is still loading.
    Traits whose key is in var flagsmith__excluded_trait_keys are left out of the payload here,
    so no model has them. Every incremental model records the keys beside its watermark: when
    they change, each rebuilds whole from every load, as a full refresh would. -#}

with

source as (
    {{ flagsmith_warehouse.raw_deliveries_to_stage() }}
),

parsed as (
    select
        delivery_id,
        received_at,
        environment_key,
        signature_status,
        body_sha256,
        _dlt_load_id as dlt_load_id,
        {{ flagsmith_warehouse.parse_identity_payload('payload') }} as payload
    from source
),

renamed as (
    select
        delivery_id,
        received_at,
        environment_key,
        signature_status,
        {{ flagsmith_warehouse.extract_field('payload', ['identity'], 'text') }} as identity,
        {{ flagsmith_warehouse.extract_field('payload', ['flags', 0, 'environment'], 'bigint') }}
            as environment_id,
        body_sha256,
        dlt_load_id,
        {{ flagsmith_warehouse.batch_stamp_expression() }} as transform_batch_at,
        {{ flagsmith_warehouse.without_excluded_traits(
            'payload', flagsmith_warehouse.excluded_trait_keys()
        ) }} as payload
    from parsed
)

select * from renamed
