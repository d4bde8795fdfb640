{#-
    The incremental machinery on Spark (macros/incremental.sql describes it for every warehouse).

    Spark's parquet tables have no DELETE and no transactions, so a run cannot delete the
    partitions it recomputes and insert them again in one transaction. Instead each incremental
    table is partitioned (column `flagsmith_partition`) and a run rewrites whole partitions with
    `insert overwrite` of dynamic partitions:

    1. The model's rows of this run (the recomputed keys, as on every warehouse) are computed and
       cached in memory (`new_rows`).
    2. The keys replaced are those of the new rows, and the identities or keys the model names
       through `replace_new_identities` / `replace_new_input_of`; the partitions touched are
       theirs.
    3. Every touched partition is written again: the new rows, and its existing rows whose key
       was not replaced. A touched partition that is left with no row is dropped.
    4. The watermark is recorded.

    A run killed at any point is safe to run again: before step 3 the model marks its row in
    the watermark table as `writing`. A model that finds that mark rebuilds whole (its table may
    be half old, half new), except staging, which repairs itself: the mark lists the loads it
    was writing, and the next run reads them again and replaces their deliveries.

    Partitions: marts keyed by identity take a hash bucket of (environment, identity)
    (var flagsmith__spark_identity_buckets, 16 by default); the delivery tables take the UTC
    date of received_at; the others their first key column (a day, an environment). What an
    incremental run rewrites is the touched partitions, whole: its cost follows them.
-#}


{% materialization flagsmith_incremental, adapter='spark' -%}
    {%- set target_relation = this.incorporate(type='table') -%}
    {%- set existing = adapter.get_relation(this.database, this.schema, this.identifier) -%}
    {%- set keys = config.get('flagsmith_replace_by') -%}
    {%- set partition = flagsmith_warehouse.spark_partition_expression() -%}

    {{ run_hooks(pre_hooks) }}

    {%- set rebuild = existing is none or existing.type != 'table' or should_full_refresh()
        or flagsmith_warehouse.is_rebuild() -%}

    {%- if not rebuild and not flagsmith_warehouse.spark_has_new_input() -%}
        {#- Input only grows: without new input no partition changes. -#}
        {%- call statement('main') -%}
            select 1
        {%- endcall -%}
    {%- elif rebuild -%}
        {#- Built beside the old table, which the model's SQL may still read (its newest batch
            stamp), then swapped in. A run killed before the swap leaves the writing mark, so the
            next run rebuilds again. -#}
        {%- do flagsmith_warehouse.spark_mark_writing('rebuild') -%}
        {%- set building = this.incorporate(
            path={'identifier': this.identifier ~ '__flagsmith_rebuild'}, type='table'
        ) -%}
        {%- call statement('drop_unfinished_rebuild') -%}
            drop table if exists {{ building }}
        {%- endcall -%}
        {%- call statement('main') -%}
            create table {{ building }}
            using parquet
            partitioned by (flagsmith_partition)
            as
            select model_rows.*, {{ partition }} as flagsmith_partition
            from (
                {{ compiled_code }}
            ) as model_rows
        {%- endcall -%}
        {%- if existing is not none -%}
            {%- do adapter.drop_relation(existing) -%}
        {%- endif -%}
        {%- call statement('swap_in_rebuild') -%}
            alter table {{ building }} rename to {{ target_relation }}
        {%- endcall -%}
    {%- else -%}
        {#- The new rows are cached (computed once, read twice). The replaced keys are theirs,
            or, when the model names more, a cached set of their own. -#}
        {%- set new_rows = this.identifier ~ '__flagsmith_new_rows' -%}
        {%- set extra_keys = flagsmith_warehouse.spark_names_extra_keys() -%}
        {%- set replaced = this.identifier ~ '__flagsmith_replaced_keys' if extra_keys
            else new_rows -%}
        {%- set cached = [new_rows, replaced] if extra_keys else [new_rows] -%}
        {%- call statement('new_rows') -%}
            cache table {{ new_rows }} as
            select model_rows.*, {{ partition }} as flagsmith_partition
            from (
                {{ compiled_code }}
            ) as model_rows
        {%- endcall -%}
        {%- if extra_keys -%}
            {%- call statement('replaced_keys') -%}
                cache table {{ replaced }} as
                {{ flagsmith_warehouse.replaced_keys_sql(new_rows, keys, null_safe=true) }}
            {%- endcall -%}
        {%- endif -%}
        {%- set columns = adapter.get_columns_in_relation(existing)
            | map(attribute='name') | list -%}
        {%- set column_list = columns | join(', ') -%}
        {%- do flagsmith_warehouse.spark_mark_writing(flagsmith_warehouse.spark_writing_note()) -%}
        {%- call statement('main') -%}
            insert overwrite table {{ target_relation }} partition (flagsmith_partition)
            select {{ column_list }} from {{ new_rows }}
            union all
            select {{ column_list }}
            from {{ target_relation }} as kept
            where
                kept.flagsmith_partition in (
                    {{ flagsmith_warehouse.spark_touched_partitions_sql(
                        new_rows, replaced, extra_keys
                    ) }}
                )
                and {{ flagsmith_warehouse.spark_key_kept('kept', replaced, keys) }}
        {%- endcall -%}
        {%- if extra_keys -%}
            {%- do flagsmith_warehouse.spark_drop_emptied_partitions(
                target_relation, new_rows, replaced, keys
            ) -%}
        {%- endif -%}
        {%- for name in cached | reverse -%}  {#- the replaced keys read the new rows -#}
            {%- call statement('uncache_' ~ loop.index) -%}
                uncache table if exists {{ name }}
            {%- endcall -%}
            {%- call statement('drop_' ~ loop.index) -%}
                drop view if exists {{ name }}
            {%- endcall -%}
        {%- endfor -%}
    {%- endif -%}

    {% do persist_docs(target_relation, model) %}

    {{ run_hooks(post_hooks) }}

    {{ return({'relations': [target_relation]}) }}
{%- endmaterialization %}


{% macro spark_partition_expression() -%}
    {#- The expression of `flagsmith_partition` over a row of the model: config
        `flagsmith_spark_partition` if set; else a hash bucket of (environment, identity) when the
        model is keyed by identity, the UTC date of received_at when keyed by delivery, else the
        first key column. It reads key columns only (received_at aside), so the partition of a
        replaced key can be told without its row. -#}
    {%- set configured = config.get('flagsmith_spark_partition') -%}
    {%- if configured -%}
        {{ return(configured) }}
    {%- endif -%}
    {%- set keys = config.get('flagsmith_replace_by') -%}
    {%- if 'identity' in keys -%}
        {{ return(
            'cast(pmod(xxhash64(coalesce(environment_id, -1), identity), '
            ~ var('flagsmith__spark_identity_buckets', 16) ~ ') as int)'
        ) }}
    {%- elif 'delivery_id' in keys -%}
        {{ return('to_date(received_at)') }}
    {%- else -%}
        {{ return(flagsmith_warehouse.partition_key(keys[0])) }}
    {%- endif -%}
{%- endmacro %}


{% macro spark_has_new_input() -%}
    {#- Whether the model's input has rows it has not processed: for staging, complete loads it
        has not taken; for the others, input rows stamped after the recorded watermark. -#}
    {%- if config.get('flagsmith_repairs_unfinished_write') -%}
        {{ return(flagsmith_warehouse.spark_staged_loads_in(compiled_code) | length > 0) }}
    {%- endif -%}
    {%- set recorded = flagsmith_warehouse.recorded_watermark() -%}
    {%- if recorded is none or recorded['transform_batch_at'] is none -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set query -%}
        select count(*) from {{ ref(config.get('flagsmith_input_model')) }}
        where {{ flagsmith_warehouse.new_input_condition() }}
    {%- endset -%}
    {{ return(run_query(query).rows[0][0] > 0) }}
{%- endmacro %}


{% macro spark_names_extra_keys() -%}
    {#- True when the model names replaced keys beyond those of its new rows. -#}
    {{ return(
        config.get('flagsmith_replace_new_identities')
        or config.get('flagsmith_replace_new_input_of')
    ) }}
{%- endmacro %}


{% macro spark_key_kept(alias, replaced, keys) -%}
    {#- True for a row of `alias` whose key is not among the replaced keys, nulls compared as
        equal (`<=>`). -#}
    not exists (
        select 1 from {{ replaced }} as replaced_key
        where
            {%- for key in keys %}
            replaced_key.{{ key }} <=> {{ alias }}.{{ key }}{{ ' and' if not loop.last }}
            {%- endfor %}
    )
{%- endmacro %}


{% macro spark_touched_partitions_sql(new_rows, replaced, extra_keys) -%}
    {#- The partitions this run rewrites: those of its new rows and, when the model names more
        keys, of those keys. -#}
    select flagsmith_partition from {{ new_rows }}
    {%- if extra_keys %}
    union
    select {{ flagsmith_warehouse.spark_partition_expression() }} from {{ replaced }}
    {%- endif %}
{%- endmacro %}


{% macro spark_drop_emptied_partitions(target_relation, new_rows, replaced, keys) -%}
    {#- A partition touched only through a named key (no new row in it) whose every row was
        replaced keeps its old files after the overwrite, which writes only partitions that have
        rows: drop it. -#}
    {%- set candidates -%}
        select distinct {{ flagsmith_warehouse.spark_partition_expression() }} from {{ replaced }}
        except
        select distinct flagsmith_partition from {{ new_rows }}
    {%- endset -%}
    {%- set partitions = run_query(candidates).columns[0].values() | list -%}
    {%- if partitions | length == 0 -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set query -%}
        select touched.flagsmith_partition
        from (
            select distinct
                {{ flagsmith_warehouse.spark_partition_expression() }} as flagsmith_partition
            from {{ replaced }}
        ) as touched
        where
            touched.flagsmith_partition not in (select flagsmith_partition from {{ new_rows }})
            and not exists (
                select 1 from {{ target_relation }} as kept
                where
                    kept.flagsmith_partition = touched.flagsmith_partition
                    and {{ flagsmith_warehouse.spark_key_kept('kept', replaced, keys) }}
            )
    {%- endset -%}
    {%- for row in run_query(query).rows -%}
        {%- call statement('drop_partition_' ~ loop.index) -%}
            alter table {{ target_relation }}
            drop if exists partition (
                flagsmith_partition = {{ flagsmith_warehouse.spark_literal(row[0]) }}
            )
        {%- endcall -%}
    {%- endfor -%}
{%- endmacro %}


{% macro spark_literal(value) -%}
    {%- if value is number -%}
        {{ return(value | string) }}
    {%- else -%}
        {{ return("'" ~ (value | string | replace("'", "''")) ~ "'") }}
    {%- endif -%}
{%- endmacro %}


{% macro spark_writing_note() -%}
    {#- What the `writing` mark says: for staging, the loads it is adding, so the next run can
        read them again; for the others, that rows are being written. -#}
    {%- if config.get('flagsmith_repairs_unfinished_write') -%}
        {{ return(
            'loads ' ~ (flagsmith_warehouse.spark_staged_loads_in(compiled_code) | join(','))
        ) }}
    {%- endif -%}
    {{ return('rows') }}
{%- endmacro %}


{% macro spark_mark_writing(note) -%}
    {#- Marks this model's watermark row as `writing` (see the top of this file), keeping what
        was recorded. -#}
    {%- set recorded = flagsmith_warehouse.recorded_watermark() -%}
    {%- call statement('mark_writing') -%}
        insert overwrite table {{ flagsmith_warehouse.watermark_relation() }}
        partition (model_name = '{{ this.identifier }}')
        select
            {%- if recorded and recorded['transform_batch_at'] is not none %}
            cast('{{ recorded['transform_batch_at'] }}' as timestamp),
            {%- else %}
            cast(null as timestamp),
            {%- endif %}
            current_timestamp(),
            {{ flagsmith_warehouse.sql_text_literal(
                recorded['recorded_state'] if recorded else none
            ) }},
            {{ flagsmith_warehouse.sql_text_literal(note) }}
    {%- endcall -%}
{%- endmacro %}


{% macro spark__create_watermarks_table() -%}
    create table if not exists {{ flagsmith_warehouse.watermark_relation() }} (
        transform_batch_at timestamp,
        recorded_at timestamp,
        recorded_state string,
        writing string,
        model_name string
    )
    using parquet
    partitioned by (model_name)
{%- endmacro %}


{% macro spark__record_watermark(input_relation) -%}
    {#- One partition per model: overwriting it replaces the model's row only. -#}
    insert overwrite table {{ flagsmith_warehouse.watermark_relation() }}
    partition (model_name = '{{ this.identifier }}')
    select
        max(transform_batch_at),
        current_timestamp(),
        {{ flagsmith_warehouse.sql_text_literal(flagsmith_warehouse.current_state()) }},
        cast(null as string)
    from {{ input_relation }}
{%- endmacro %}


{% macro spark__rebuilds_after_erasure() -%}
    {#- Every model: `forget` cannot delete rows from the parquet tables, so after an erasure
        each rebuilds from what the lake still holds. -#}
    {{ return(true) }}
{%- endmacro %}


{% macro spark__erasures_table() -%}
    {#- The lake's erasures files under flagsmith_raw/erasures/, which the loader and `transform`
        create (one file with no row before the first erasure). -#}
    {{ return('parquet.`' ~ flagsmith_warehouse.spark_lake_dataset() ~ '/erasures`') }}
{%- endmacro %}


{#- ------------------------------------------------------------------ the lake's raw rows -#}

{% macro spark_lake_dataset() -%}
    {{ return(
        (env_var('FLAGSMITH_LAKE_DIR', 'data/lake') | string).rstrip('/')
        ~ '/' ~ var('flagsmith_schema', 'flagsmith_raw')
    ) }}
{%- endmacro %}


{% macro spark_completed_loads() -%}
    {#- The load ids dlt recorded as complete in the lake, in order. -#}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set result = run_query(
        "select distinct load_id from json.`" ~ flagsmith_warehouse.spark_lake_dataset()
        ~ "/_dlt_loads` where status = 0 order by load_id"
    ) -%}
    {%- set loads = [] -%}
    {%- for row in result.rows -%}
        {%- if not modules.re.fullmatch('[0-9.]+', row[0] | string) -%}
            {{ exceptions.raise_compiler_error("unexpected dlt load id in the lake: " ~ row[0]) }}
        {%- endif -%}
        {%- do loads.append(row[0] | string) -%}
    {%- endfor -%}
    {{ return(loads) }}
{%- endmacro %}


{% macro spark_loads_to_stage(completed) -%}
    {#- Complete loads staging has not taken (all on a full refresh or a rebuild), and those a
        run that did not finish was adding (its `writing` mark), whose rows it replaces. -#}
    {#- `completed`: spark_completed_loads(), read once by the caller -#}
    {%- if not flagsmith_warehouse.is_incremental_run() -%}
        {{ return(completed) }}
    {%- endif -%}
    {%- set staged = [] -%}
    {%- for row in run_query("select distinct dlt_load_id from " ~ this).rows -%}
        {%- do staged.append(row[0] | string) -%}
    {%- endfor -%}
    {%- set recorded = flagsmith_warehouse.recorded_watermark() -%}
    {%- set unfinished = [] -%}
    {%- if recorded and (recorded['writing'] or '').startswith('loads ') -%}
        {%- set unfinished = recorded['writing'][6:].split(',') -%}
    {%- endif -%}
    {%- set loads = [] -%}
    {%- for load_id in completed -%}
        {%- if load_id not in staged or load_id in unfinished -%}
            {%- do loads.append(load_id) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(loads) }}
{%- endmacro %}


{% macro spark_staged_loads_in(compiled_sql) -%}
    {#- The loads staging's compiled SQL reads, from the line `spark__raw_deliveries_to_stage`
        writes into it, so the materialization marks and checks exactly what the query reads. -#}
    {%- set found = modules.re.search('-- flagsmith_loads_to_stage: ([0-9.,]*)', compiled_sql) -%}
    {%- if not found -%}
        {{ exceptions.raise_compiler_error("staging's SQL does not name the loads it reads") }}
    {%- endif -%}
    {{ return(found.group(1).split(',') | reject('equalto', '') | list) }}
{%- endmacro %}


{% macro spark__raw_deliveries_to_stage() -%}
    {#- Reads the lake's files of the given loads only, through a glob of their names
        (`<load_id>.<file_id>.parquet`): reading the folder would open the files of a load still
        being written, or cut short by a crash. The first complete load always has a file of the
        table (the loader writes both raw tables on its first load), so each glob matches at
        least one file even when a load landed quarantined deliveries only. -#}
    {%- set _lineage = source('flagsmith', 'identity_webhooks') -%}
    {%- set completed = flagsmith_warehouse.spark_completed_loads() -%}
    {%- set loads = flagsmith_warehouse.spark_loads_to_stage(completed) -%}
    {%- set folder = flagsmith_warehouse.spark_lake_dataset() ~ '/identity_webhooks' %}
    -- flagsmith_loads_to_stage: {{ loads | join(',') }}
    {%- if loads | length == 0 %}
    select
        cast(null as string) as delivery_id,
        cast(null as timestamp) as received_at,
        cast(null as string) as environment_key,
        cast(null as string) as signature_status,
        cast(null as string) as body_sha256,
        cast(null as string) as payload,
        cast(null as string) as _dlt_load_id
    where false
    {%- else -%}
    {%- for chunk in loads | batch(200) %}
    select
        delivery_id,
        received_at,
        environment_key,
        signature_status,
        body_sha256,
        payload,
        _dlt_load_id
    from parquet.`{{ folder }}/{ {{- ([completed[0]] + chunk) | unique | join(',') -}} }.*.parquet`
    where _dlt_load_id in ('{{ chunk | join("', '") }}')
    {{ 'union all' if not loop.last }}
    {%- endfor %}
    {%- endif %}
{%- endmacro %}
