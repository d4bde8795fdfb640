{{ config(materialized='table') }}

{#- The only place the payload is parsed. A table, so the list models below unnest an already
    typed value instead of parsing the JSON again on every read. -#}

with

source as (
    select * from {{ source('flagsmith', 'identity_webhooks') }}
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
        {{ flagsmith_warehouse.extract_field('payload', ['flags', 0, 'environment'], 'bigint') }} as environment_id,
        body_sha256,
        dlt_load_id,
        payload
    from parsed
)

select * from renamed
