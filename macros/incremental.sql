{#-
    Incremental processing that gives exactly what a full refresh gives, however late data lands.

    1. Batches. `stg_flagsmith__identity_webhooks` appends the raw rows of dlt loads it has not
       seen (by `_dlt_load_id`, so a load committed late by another loader is still picked up)
       and stamps them with `transform_batch_at`, which only ever grows.
    2. Watermarks. Each incremental mart records, in the same transaction as its rows, the
       newest batch stamp of its input it has processed (`flagsmith__transform_watermarks`).
       Input rows stamped after the watermark are new to it. A model that fails keeps its old
       watermark, so the next run processes both batches.
    3. Partitions. A mart's rows are a function of all the input rows of one partition (an
       identity, an identity's feature, a day of a feature, a feature or segment). A run
       recomputes every partition that has new input rows and replaces it whole
       (`flagsmith_replace_partitions`). Input is append-only, so a partition without new input
       is unchanged, and one with new input is computed as a full refresh would compute it: no
       lookback window to guess. Most marts recompute from all of the partition's input; where
       that would reread history, the mart's rows stand for their input instead (exposure
       periods merge new evaluations into their runs; features and segments combine their row
       with the new deliveries); each model's header says how.
    4. Recorded state. A mart whose rows depend on something besides its input (which features
       are experiments, an analyst option) names it with `rebuild_state`: a macro returning text
       that is recorded beside the watermark. When the text differs from the recorded one (or
       none was recorded), the run rebuilds the mart whole: every input row is new, the model
       reads none of its existing rows (`is_incremental_run()` is false), and the strategy
       empties the table before inserting. Never a mix of old and new.
    5. Erasures. Input is append-only except for `flagsmith-warehouse forget`, which deletes an
       identity's deliveries and its rows from every table keyed by identity (loader/privacy.py).
       Partitions keyed by identity are then exactly what a full refresh gives; a mart whose
       partitions count across identities (features, segments, daily counts, allocations) sets
       `rebuild_after_erasure`, so the completed erasures are part of its recorded state and a
       new one rebuilds it whole. On Spark every model does (`rebuilds_after_erasure`): its
       parquet tables have no DELETE.
-#}


{% macro batch_stamp_expression() -%}
    {#- The stamp of the rows this run appends: the run's start, or a microsecond after the last
        stamp if the clock went backwards since, so that stamps strictly grow. -#}
    {%- set started -%}
        cast(
            '{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}+00'
            as {{ flagsmith_warehouse.sql_type('timestamp with time zone') }}
        )
    {%- endset -%}
    {%- if flagsmith_warehouse.is_incremental_table() -%}
        greatest(
            {{ started }},
            coalesce(
                (select max(transform_batch_at) from {{ this }}) + interval '1 microsecond',
                {{ started }}
            )
        )
    {%- else -%}
        {{ started }}
    {%- endif -%}
{%- endmacro %}


{% macro watermark_relation() -%}
    {{ return(api.Relation.create(
        database=this.database,
        schema=this.schema,
        identifier='flagsmith__transform_watermarks',
        type='table'
    )) }}
{%- endmacro %}


{% macro create_watermarks_table() -%}
    {{ return(adapter.dispatch('create_watermarks_table', 'flagsmith_warehouse')()) }}
{%- endmacro %}


{% macro default__create_watermarks_table() -%}
    {#- pre_hook of stg_flagsmith__identity_webhooks, which runs before every mart, and of every
        incremental mart (for a mart built alone or in another schema). Emitting the DDL only
        when the table is missing keeps marts that dbt runs in parallel from colliding on it
        (DuckDB: "Catalog write-write conflict on create"). -#}
    {%- set watermarks = flagsmith_warehouse.watermark_relation() -%}
    {%- set existing = adapter.get_relation(
        watermarks.database, watermarks.schema, watermarks.identifier
    ) -%}
    {%- if not existing -%}
        create table if not exists {{ flagsmith_warehouse.watermark_relation() }} (
            model_name varchar not null,
            transform_batch_at timestamp with time zone,
            recorded_at timestamp with time zone not null,
            recorded_state varchar
        )
    {%- elif 'recorded_state' not in (
        adapter.get_columns_in_relation(existing) | map(attribute='name') | map('lower') | list
    ) -%}
        {#- a table from a version without recorded state: every mart that has one rebuilds once -#}
        alter table {{ existing }} add column recorded_state varchar
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{% macro record_watermark(input_relation) -%}
    {{ return(adapter.dispatch('record_watermark', 'flagsmith_warehouse')(input_relation)) }}
{%- endmacro %}


{% macro default__record_watermark(input_relation) -%}
    {#- post_hook of every incremental mart: the newest input batch it has now processed. Runs in
        the model's transaction, so the watermark moves only when the rows did. -#}
    delete from {{ flagsmith_warehouse.watermark_relation() }}
    where model_name = '{{ this.identifier }}';
    insert into {{ flagsmith_warehouse.watermark_relation() }}
        (model_name, transform_batch_at, recorded_at, recorded_state)
    select
        '{{ this.identifier }}',
        max(transform_batch_at),
        current_timestamp,
        {{ flagsmith_warehouse.sql_text_literal(flagsmith_warehouse.current_state()) }}
    from {{ input_relation }}
{%- endmacro %}


{% macro sql_text_literal(text) -%}
    {%- if text is none -%}
        null
    {%- else -%}
        '{{ text | replace("'", "''") }}'
    {%- endif -%}
{%- endmacro %}


{% macro recorded_watermark() -%}
    {#- This model's row of the watermark table as a dict (transform_batch_at as text,
        recorded_state), or none when there is none. -#}
    {%- if not execute
        or not adapter.get_relation(
            this.database, this.schema, flagsmith_warehouse.watermark_relation().identifier
        )
    -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set query -%}
        -- the batch stamp as the warehouse writes it, so the literal compares exactly
        select cast(transform_batch_at as {{ dbt.type_string() }}) as batch_text, *
        from {{ flagsmith_warehouse.watermark_relation() }}
        where model_name = '{{ this.identifier }}'
    {%- endset -%}
    {%- set table = run_query(query) -%}
    {%- if table.rows | length == 0 -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set row = table.rows[0] -%}
    {%- set names = table.column_names | map('lower') | list -%}
    {%- set state = row[names.index('recorded_state')] if 'recorded_state' in names else none -%}
    {%- set writing = row[names.index('writing')] if 'writing' in names else none -%}
    {{ return({
        'transform_batch_at': row[names.index('batch_text')],
        'recorded_state': none if state is none else state | string,
        'writing': none if writing is none else writing | string,
    }) }}
{%- endmacro %}


{% macro current_state() -%}
    {#- The text this model's rows depend on besides its input, or none: the excluded trait
        keys (every incremental model: staging leaves those traits out, so a change rebuilds
        everything, as a full refresh would), what the macro named by config
        `flagsmith_rebuild_state` returns, and the completed erasures (`erasure_state`) where
        `rebuilds_after_erasure` says so. -#}
    {%- set parts = [] -%}
    {%- set excluded = flagsmith_warehouse.excluded_trait_keys_state() -%}
    {%- if excluded -%}
        {%- do parts.append(excluded) -%}
    {%- endif -%}
    {%- set macro_name = config.get('flagsmith_rebuild_state') -%}
    {%- if macro_name -%}
        {%- set own = flagsmith_warehouse[macro_name]() -%}
        {%- if own -%}
            {%- do parts.append(own) -%}
        {%- endif -%}
    {%- endif -%}
    {%- if flagsmith_warehouse.rebuilds_after_erasure() -%}
        {%- set erasures = flagsmith_warehouse.erasure_state() -%}
        {%- if erasures -%}
            {%- do parts.append(erasures) -%}
        {%- endif -%}
    {%- endif -%}
    {{ return(parts | join('\n') if parts else none) }}
{%- endmacro %}


{% macro rebuilds_after_erasure() -%}
    {#- Whether the current model keeps the completed erasures in its recorded state, so that a
        new erasure rebuilds it whole. -#}
    {{ return(adapter.dispatch('rebuilds_after_erasure', 'flagsmith_warehouse')()) }}
{%- endmacro %}


{% macro default__rebuilds_after_erasure() -%}
    {#- `forget` deletes an erased identity's rows from every table keyed by identity in place;
        the models counting across identities set `rebuild_after_erasure`. -#}
    {{ return(true if config.get('flagsmith_rebuild_after_erasure') else false) }}
{%- endmacro %}


{% macro erasure_state() -%}
    {#- The completed erasures as text (how many, the newest), or '' while there are none, so a
        warehouse that never erased records no state for it. Read from flagsmith_raw.erasures,
        beside the raw tables (on Spark, in the lake: `erasures_table`). -#}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set table = flagsmith_warehouse.erasures_table() -%}
    {%- if not table -%}
        {{ return('') }}
    {%- endif -%}
    {%- set result = run_query(
        "select count(*), cast(max(erased_at) as " ~ dbt.type_string() ~ ") from " ~ table
        ~ " where action = 'forget' and rows_removed is not null"
    ) -%}
    {%- set row = result.rows[0] -%}
    {%- if row[0] == 0 -%}
        {{ return('') }}
    {%- endif -%}
    {{ return('erasures ' ~ row[0] ~ ', newest ' ~ row[1]) }}
{%- endmacro %}


{% macro erasures_table() -%}
    {#- What to read the erasures audit from, or none before the first erasure. -#}
    {{ return(adapter.dispatch('erasures_table', 'flagsmith_warehouse')()) }}
{%- endmacro %}


{% macro default__erasures_table() -%}
    {%- set raw = source('flagsmith', 'identity_webhooks') -%}
    {{ return(adapter.get_relation(raw.database, raw.schema, 'erasures')) }}
{%- endmacro %}


{% macro is_rebuild() -%}
    {#- True when an incremental run must rebuild the model whole: its recorded state differs
        from the current one. -#}
    {%- if not (flagsmith_warehouse.is_incremental_table() and execute) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- if not config.get('flagsmith_replace_by') -%}
        {{ return(false) }}
    {%- endif -%}
    {#- No state and none recorded are the same: a model whose state is empty until an option
        is set does not rebuild on its first run after an upgrade, and does when the option is
        unset again. -#}
    {%- set state = flagsmith_warehouse.current_state() or '' -%}
    {%- set recorded = flagsmith_warehouse.recorded_watermark() -%}
    {#- A write that did not finish (Spark: macros/spark_incremental.sql) leaves a table that may
        be half old, half new: rebuilt whole, unless the model repairs it itself. -#}
    {%- if recorded and recorded['writing'] is not none and not (
        config.get('flagsmith_repairs_unfinished_write')
        and recorded['writing'].startswith('loads ')
    ) -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set recorded_state = (recorded['recorded_state'] if recorded else none) or '' -%}
    {{ return(recorded_state != state) }}
{%- endmacro %}


{% macro is_incremental_table() -%}
    {#- dbt's is_incremental(), also for Spark's materialization `flagsmith_incremental`
        (macros/spark_incremental.sql): the model's table exists and this is no full refresh. -#}
    {%- if is_incremental() -%}
        {{ return(true) }}
    {%- endif -%}
    {%- if not execute or model.config.materialized != 'flagsmith_incremental' -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set existing = adapter.get_relation(this.database, this.schema, this.identifier) -%}
    {{ return(existing is not none and existing.type == 'table' and not should_full_refresh()) }}
{%- endmacro %}


{% macro incremental_materialization() -%}
    {#- dbt's incremental materialization, and on Spark the project's own (its parquet tables
        have no DELETE: macros/spark_incremental.sql). -#}
    {{ return('flagsmith_incremental' if adapter.type() == 'spark' else 'incremental') }}
{%- endmacro %}


{% macro is_incremental_run() -%}
    {#- is_incremental(), unless the model rebuilds whole this run (see `is_rebuild`): use it
        wherever a model reads its own existing rows. -#}
    {{ return(
        flagsmith_warehouse.is_incremental_table() and not flagsmith_warehouse.is_rebuild()
    ) }}
{%- endmacro %}


{% macro new_input_condition(column='transform_batch_at') -%}
    {#- True for input rows this model has not processed yet (all rows on a full refresh or a
        rebuild). The watermark is read when the model runs, so the filter is a literal the
        warehouse can prune on. -#}
    {%- if flagsmith_warehouse.is_incremental_run() -%}
        {%- set recorded = flagsmith_warehouse.recorded_watermark() -%}
        {%- if recorded is none or recorded['transform_batch_at'] is none -%}
            true
        {%- else -%}
            {{ column }} > cast(
                '{{ recorded['transform_batch_at'] }}'
                as {{ flagsmith_warehouse.sql_type('timestamp with time zone') }}
            )
        {%- endif -%}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}


{% macro new_input_keys_sql(input, key_expressions, condition=none) -%}
    {#- A select of the distinct keys (`key_expressions`, columns or expressions) of the rows of
        `input` this model has not processed (`new_input_condition`), where `condition` holds if
        given: which partitions an incremental run recomputes or replaces. Read from the relation
        itself rather than from a CTE, so the watermark literal prunes row groups and the
        warehouse keeps no copy of a CTE with two readers. -#}
    select distinct {{ key_expressions | join(', ') }}
    from {{ input }}
    where {{ flagsmith_warehouse.new_input_condition() }}
    {%- if condition %} and {{ condition }}{% endif %}
{%- endmacro %}


{% macro incremental_config(
    input_model, replace_by, replace_new_identities=false, replace_new_input_of=none,
    rebuild_state=none, rebuild_after_erasure=false
) -%}
    {#- The config every incremental mart shares; `replace_by` names the partition columns.
        A recomputed partition is replaced even when it now has no rows, if it is named by
        `replace_new_identities` (every identity with new deliveries, keyed (environment_id,
        identity)) or `replace_new_input_of` (the distinct `replace_by` columns of the new rows
        of that model). `rebuild_state`, `rebuild_after_erasure`: see "Recorded state" and
        "Erasures" above. -#}
    {{ return({
        'materialized': flagsmith_warehouse.incremental_materialization(),
        'incremental_strategy': 'flagsmith_replace_partitions',
        'flagsmith_replace_by': replace_by,
        'flagsmith_input_model': input_model,
        'flagsmith_replace_new_identities': replace_new_identities,
        'flagsmith_replace_new_input_of': replace_new_input_of,
        'flagsmith_rebuild_state': rebuild_state,
        'flagsmith_rebuild_after_erasure': rebuild_after_erasure,
        'on_schema_change': 'fail',
        'pre_hook': [
            "{{ flagsmith_warehouse.create_watermarks_table() }}",
            "{{ flagsmith_warehouse.planner_settings() }}",
        ],
        'post_hook': ["{{ flagsmith_warehouse.record_watermark(ref('" ~ input_model ~ "')) }}"],
    }) }}
{%- endmacro %}


{% macro planner_settings() -%}
    {{ return(adapter.dispatch('planner_settings', 'flagsmith_warehouse')()) }}
{%- endmacro %}


{% macro default__planner_settings() -%}
{%- endmacro %}


{% macro postgres__planner_settings() -%}
    {#- Postgres estimates one row for a CTE filtered on a window function (the identities with
        new deliveries, numbered), and then joins the unnested traits to it in a nested loop that
        unnests every payload once per outer row: 130 s instead of 0.2 s for trait_history on
        2,000 deliveries. Hash and merge joins are right for these batch queries; `set local`
        lasts for the model's transaction only. JIT is off because the penalty on nested loops
        inflates the estimated cost past its threshold, and compiling then costs seconds. -#}
    set local enable_nestloop = off;
    set local jit = off
{%- endmacro %}


{% macro get_incremental_flagsmith_replace_partitions_sql(arg_dict) -%}
    {#- Replace whole partitions: delete every target row whose partition appears in the new
        rows, then insert the new rows. Input only grows, so a recomputed partition of most marts
        keeps at least one row and the new rows name every partition that changed. Where a
        recomputed partition can end up empty (a late delivery at the same instant as an
        identity's only membership, trait value or experiment period can end it: one instant,
        the last delivery's state), the model names the partitions it recomputed through
        `replace_new_identities` or `replace_new_input_of`, and those are emptied too. A rebuild
        (recorded state changed) empties the whole table. Nullable partition columns
        (environment_id) are compared null-safely. -#}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set partition_columns = config.get('flagsmith_replace_by') -%}
    {%- if not partition_columns -%}
        {{ exceptions.raise_compiler_error(
            "flagsmith_replace_partitions needs the config flagsmith_replace_by (a list of columns)"
        ) }}
    {%- endif -%}
    {%- set keys = [] -%}
    {%- for column in partition_columns -%}
        {%- do keys.append(flagsmith_warehouse.partition_key(column)) -%}
    {%- endfor -%}
    {%- set dest_columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {%- if flagsmith_warehouse.is_rebuild() %}
    delete from {{ target }};
    {%- else %}
    delete from {{ target }}
    where ({{ keys | join(', ') }}) in (
        {{ flagsmith_warehouse.replaced_keys_sql(source, partition_columns) }}
    );
    {%- endif %}
    insert into {{ target }} ({{ dest_columns }})
    select {{ dest_columns }} from {{ source }}
{%- endmacro %}


{% macro replaced_keys_sql(new_rows, partition_columns, null_safe=false) -%}
    {#- A select of the keys an incremental run replaces: the distinct keys of its new rows
        (`new_rows`), and those the model names besides them: with `replace_new_identities`
        every identity with new deliveries, with `replace_new_input_of` the keys of that model's
        new rows. Keys as `partition_key` gives them, for `in`; with `null_safe` the columns as
        they are, nulls kept, for Spark's `<=>`. -#}
    {%- set keys = [] -%}
    {%- for column in partition_columns -%}
        {%- do keys.append(column if null_safe else flagsmith_warehouse.partition_key(column)) -%}
    {%- endfor -%}
    {%- set new_input_of = config.get('flagsmith_replace_new_input_of') -%}
    select distinct {{ keys | join(', ') }} from {{ new_rows }}
    {%- if config.get('flagsmith_replace_new_identities') %}
    {%- if partition_columns | list != ['environment_id', 'identity'] -%}
        {{ exceptions.raise_compiler_error(
            "replace_new_identities needs replace_by ['environment_id', 'identity'], not "
            ~ partition_columns
        ) }}
    {%- endif %}
    union
    {{ flagsmith_warehouse.new_input_keys_sql(ref('stg_flagsmith__identity_webhooks'), keys) }}
    {%- endif %}
    {%- if new_input_of %}
    union
    {{ flagsmith_warehouse.new_input_keys_sql(ref(new_input_of), keys) }}
    {%- endif %}
{%- endmacro %}


{% macro nullable_key_columns() -%}
    {#- The key columns that may be null: environment_id, absent from a delivery without flags.
        Keys are compared through `partition_key`, which reads this list. -#}
    {{ return(['environment_id']) }}
{%- endmacro %}


{% macro environment_scope(environment_id) -%}
    {#- An environment id as a key: -1 (never a Flagsmith id) for a delivery without flags, so
        keys compare with `=` and `in`. -#}
    coalesce({{ environment_id }}, -1)
{%- endmacro %}


{% macro partition_key(column) -%}
    {#- A key column as compared: through `environment_scope` when `nullable_key_columns` names it
        (`column` may be qualified: `alias.environment_id`), else as is. -#}
    {%- if column.split('.')[-1] in flagsmith_warehouse.nullable_key_columns() -%}
        {{ flagsmith_warehouse.environment_scope(column) }}
    {%- else -%}
        {{ column }}
    {%- endif -%}
{%- endmacro %}


{% macro identities_with_new_deliveries_sql() -%}
    {#- (environment scope, identity) of every identity with deliveries this model has not
        processed, keyed like `partition_key`. -#}
    {{ flagsmith_warehouse.new_input_keys_sql(ref('stg_flagsmith__identity_webhooks'), [
        flagsmith_warehouse.environment_scope('environment_id') ~ ' as environment_scope',
        'identity',
    ]) }}
{%- endmacro %}


{% macro new_identity_deliveries_sql() -%}
    {#- A select of the delivery instants of each identity (in its environment) that has new
        deliveries, numbered in order, with the identity's newest batch stamp: what the segment
        and trait histories need to see that something was absent from a delivery. All
        identities on a full refresh.

        Deliveries of one identity with the same received_at (two workers or two receivers
        stamping the same microsecond) are one instant: their true order is unknown, so the last
        by delivery_id stands for the instant's state (`delivery_id`), and all of them count as
        evaluations (`deliveries_at_instant`). Runs then start at distinct times, which keeps
        the histories' keys unique. -#}
    {%- set scope = flagsmith_warehouse.environment_scope('environment_id') -%}
    with

    webhooks as (
        select * from {{ ref('stg_flagsmith__identity_webhooks') }}
    ),

    identities_with_new_deliveries as (
        {{ flagsmith_warehouse.identities_with_new_deliveries_sql() }}
    ),

    identity_deliveries as (
        select
            delivery_id,
            environment_id,
            identity,
            received_at,
            transform_batch_at
        from webhooks
        {% if flagsmith_warehouse.is_incremental_run() %}
        where ({{ scope }}, identity) in (
            select environment_scope, identity from identities_with_new_deliveries
        )
        {% endif %}
    ),

    deliveries_ranked_in_instant as (
        select
            delivery_id,
            environment_id,
            identity,
            received_at,
            row_number() over (
                partition by environment_id, identity, received_at
                order by delivery_id desc
            ) as rank_in_instant,
            count(*) over (
                partition by environment_id, identity, received_at
            ) as deliveries_at_instant,
            max(transform_batch_at) over (
                partition by environment_id, identity
            ) as transform_batch_at
        from identity_deliveries
    )

    select
        delivery_id,
        environment_id,
        identity,
        received_at,
        deliveries_at_instant,
        row_number() over (
            partition by environment_id, identity
            order by received_at
        ) as delivery_number,
        transform_batch_at
    from deliveries_ranked_in_instant
    where rank_in_instant = 1
{%- endmacro %}


{% macro join_run_ends(runs, deliveries, last_alias, next_alias) -%}
    {#- Joins to a run (with `last_delivery_number`) the identity's delivery that ended it (as
        `last_alias`) and the one after it (as `next_alias`, absent while the run is current),
        from the numbered deliveries of `new_identity_deliveries_sql`. -#}
    inner join {{ deliveries }} as {{ last_alias }}
        on
            {{ flagsmith_warehouse.environment_scope(runs ~ '.environment_id') }}
                = {{ flagsmith_warehouse.environment_scope(last_alias ~ '.environment_id') }}
            and {{ runs }}.identity = {{ last_alias }}.identity
            and {{ runs }}.last_delivery_number = {{ last_alias }}.delivery_number
    left join {{ deliveries }} as {{ next_alias }}
        on
            {{ flagsmith_warehouse.environment_scope(runs ~ '.environment_id') }}
                = {{ flagsmith_warehouse.environment_scope(next_alias ~ '.environment_id') }}
            and {{ runs }}.identity = {{ next_alias }}.identity
            and {{ runs }}.last_delivery_number + 1 = {{ next_alias }}.delivery_number
{%- endmacro %}


{% macro raw_deliveries_to_stage() -%}
    {#- The raw rows staging has not taken yet (all of them on a full refresh or a rebuild),
        from loads dlt recorded as complete only, so a load id is either wholly staged or not at
        all, even when its jobs commit one by one or another loader is still loading. -#}
    {{ return(adapter.dispatch('raw_deliveries_to_stage', 'flagsmith_warehouse')()) }}
{%- endmacro %}


{% macro default__raw_deliveries_to_stage() -%}
    select * from {{ source('flagsmith', 'identity_webhooks') }}
    where
        _dlt_load_id in (
            select load_id from {{ source('flagsmith', 'dlt_loads') }}
            where status = 0
        )
        {% if flagsmith_warehouse.is_incremental_run() %}
        and _dlt_load_id not in (
            select distinct dlt_load_id from {{ this }} where dlt_load_id is not null
        )
        {% endif %}
{%- endmacro %}


{% macro materialized_cte() -%}
    {#- `with name as materialized (...)`: computes a CTE read several times once (DuckDB,
        Postgres); Spark has no such hint. -#}
    {{ return(adapter.dispatch('materialized_cte', 'flagsmith_warehouse')()) }}
{%- endmacro %}


{% macro default__materialized_cte() -%}
    materialized
{%- endmacro %}


{% macro spark__materialized_cte() -%}
{%- endmacro %}
