{#-
    What the experiment marts and the analyst options share: which features are experiments,
    the identity map, the trait columns, and the chi-square upper tail for the sample-ratio
    check. The options are dbt vars (`flagsmith__identity_map`, `flagsmith__trait_columns`);
    docs/experiments.md describes them for users.
-#}


{#- ------------------------------------------------------------------- experiment features -#}

{% macro experiment_features_sql() -%}
    {#- (environment_id, feature_id, feature_name) of every experiment: a feature whose latest
        delivery calls it MULTIVARIATE, in one environment. -#}
    select environment_id, feature_id, feature_name
    from {{ ref('flagsmith__features') }}
    where feature_type = 'MULTIVARIATE'
{%- endmacro %}


{% macro experiment_features_state() -%}
    {#- The recorded state of the experiment marts' incremental rows (macros/incremental.sql,
        "Recorded state"): the sorted list of experiment features. A feature that becomes an
        experiment, or stops being one, changes it, and the next run rebuilds the rows whole. -#}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set query -%}
        select environment_id, feature_id from ({{ flagsmith_warehouse.experiment_features_sql() }})
        as experiments
        order by environment_id, feature_id
    {%- endset -%}
    {%- set keys = [] -%}
    {%- for row in run_query(query).rows -%}
        {%- do keys.append((row[0] | int | string) ~ ':' ~ (row[1] | int | string)) -%}
    {%- endfor -%}
    {{ return('experiments=' ~ (keys | join(','))) }}
{%- endmacro %}


{#- ------------------------------------------------------------------------- identity map -#}

{% macro relation_from_var(var_name) -%}
    {#- The relation a var names, or none when it is unset. `schema.table` (or
        `database.schema.table`) is a relation; a bare name is a model of the project (the host
        project's, when this one is installed as a package), so dbt builds it first. -#}
    {%- set name = var(var_name, none) -%}
    {%- if not name -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set parts = name.split('.') -%}
    {%- if parts | length == 1 -%}
        {{ return(ref(name)) }}
    {%- elif parts | length == 2 -%}
        {{ return(api.Relation.create(schema=parts[0], identifier=parts[1])) }}
    {%- elif parts | length == 3 -%}
        {{ return(api.Relation.create(database=parts[0], schema=parts[1], identifier=parts[2])) }}
    {%- else -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ var_name ~ " must be a model name, schema.table or database.schema.table, "
            ~ "not '" ~ name ~ "'"
        ) }}
    {%- endif -%}
{%- endmacro %}


{% macro mapped_identities_sql() -%}
    {#- One row per mapped identity: `identity`, `user_id` (the smallest of its keys, compared as
        text) and `user_id_count` (how many distinct keys it maps to; more than one is listed by
        a warn test). No rows without a map. -#}
    {%- set relation = flagsmith_warehouse.relation_from_var('flagsmith__identity_map') -%}
    {%- if relation is none %}
    select
        cast(null as {{ dbt.type_string() }}) as identity,
        cast(null as {{ dbt.type_string() }}) as user_id,
        0 as user_id_count
    where 1 = 0
    {%- else -%}
    {%- set identity_column = var('flagsmith__identity_map_identity_column', 'identity') -%}
    {%- set user_id_column = var('flagsmith__identity_map_user_id_column', 'user_id') %}
    select
        identity,
        min(user_id) as user_id,
        count(distinct user_id) as user_id_count
    from (
        select
            cast({{ adapter.quote(identity_column) }} as {{ dbt.type_string() }}) as identity,
            cast({{ adapter.quote(user_id_column) }} as {{ dbt.type_string() }}) as user_id
        from {{ relation }}
    ) as identity_map
    where identity is not null and user_id is not null
    group by identity
    {%- endif -%}
{%- endmacro %}


{#- ------------------------------------------------------------------------ trait columns -#}

{% macro trait_columns(reserved_names=[]) -%}
    {#- var flagsmith__trait_columns as a list of {key, name}: a trait key, or {key, alias};
        the column is the alias, else `trait_` + the key lowercased with every character
        outside [a-z0-9_] as `_`. A name that is not [a-z_][a-z0-9_]*, a name used twice or by
        one of the model's own columns (`reserved_names`), and an excluded trait key are errors
        at compile time. -#}
    {%- set configured = var('flagsmith__trait_columns', []) or [] -%}
    {%- if configured is string or configured is mapping -%}
        {{ exceptions.raise_compiler_error(
            "var flagsmith__trait_columns must be a list of trait keys or {key, alias} objects"
        ) }}
    {%- endif -%}
    {%- set excluded = flagsmith_warehouse.excluded_trait_keys() -%}
    {%- set columns = [] -%}
    {%- set names = [] -%}
    {%- for item in configured -%}
        {%- if item is mapping -%}
            {%- set key = item.get('key') -%}
            {%- set alias = item.get('alias') -%}
            {%- set unknown = item.keys() | reject('in', ['key', 'alias']) | list -%}
            {%- if unknown -%}
                {{ exceptions.raise_compiler_error(
                    "flagsmith__trait_columns: unknown field(s) " ~ unknown | join(', ')
                    ~ " in " ~ item ~ " (only key and alias)"
                ) }}
            {%- endif -%}
        {%- else -%}
            {%- set key = item -%}
            {%- set alias = none -%}
        {%- endif -%}
        {%- if key is not string or key == '' -%}
            {{ exceptions.raise_compiler_error(
                "flagsmith__trait_columns: each item needs a trait key (text), got " ~ item
            ) }}
        {%- endif -%}
        {%- if key in excluded -%}
            {{ exceptions.raise_compiler_error(
                "flagsmith__trait_columns: trait key '" ~ key ~ "' is excluded by "
                ~ "flagsmith__excluded_trait_keys"
            ) }}
        {%- endif -%}
        {%- set name = alias if alias
            else 'trait_' ~ modules.re.sub('[^a-z0-9_]', '_', key.lower()) -%}
        {%- if name is not string or not modules.re.fullmatch('[a-z_][a-z0-9_]*', name) -%}
            {{ exceptions.raise_compiler_error(
                "flagsmith__trait_columns: '" ~ name ~ "' (for trait key '" ~ key ~ "') is not a "
                ~ "column name: use [a-z_][a-z0-9_]*"
            ) }}
        {%- endif -%}
        {%- if name in names or name in reserved_names -%}
            {{ exceptions.raise_compiler_error(
                "flagsmith__trait_columns: two columns would be named '" ~ name ~ "' (trait key '"
                ~ key ~ "'): give one an alias"
            ) }}
        {%- endif -%}
        {%- do names.append(name) -%}
        {%- do columns.append({'key': key, 'name': name}) -%}
    {%- endfor -%}
    {{ return(columns) }}
{%- endmacro %}


{% macro excluded_trait_keys() -%}
    {#- var flagsmith__excluded_trait_keys: a list, or comma-separated text. -#}
    {%- set configured = var('flagsmith__excluded_trait_keys', []) or [] -%}
    {%- if configured is string -%}
        {%- set configured = configured.split(',') | map('trim') | reject('equalto', '') | list -%}
    {%- endif -%}
    {{ return(configured | list) }}
{%- endmacro %}


{% macro excluded_trait_keys_state() -%}
    {#- The excluded trait keys as recorded beside every incremental model's watermark: how
        many and a hash of them, sorted (not the keys: no table names them); '' when none. -#}
    {%- set keys = flagsmith_warehouse.excluded_trait_keys() | unique | sort -%}
    {%- if not keys -%}
        {{ return('') }}
    {%- endif -%}
    {{ return('excluded trait keys: ' ~ keys | length ~ ', md5 ' ~ local_md5(keys | join('\n'))) }}
{%- endmacro %}


{% macro trait_values_as_of(units, at_column, trait_columns) -%}
    {#- A select of `units` (a CTE with environment_id, identity, feature_id and `at_column`)
        keyed by those three, with one text column per trait column: the value stored at
        `at_column` (the run holding that instant, null when the trait was absent), read from
        flagsmith__trait_history. -#}
    select
        units.environment_id,
        units.identity,
        units.feature_id,
        {% for column in trait_columns -%}
        max(case when traits.trait_key = {{ flagsmith_warehouse.sql_text_literal(column.key) }}
            then traits.trait_value end) as {{ column.name }}{{ ',' if not loop.last }}
        {% endfor %}
    from {{ units }} as units
    inner join {{ ref('flagsmith__trait_history') }} as traits
        on
            units.environment_id = traits.environment_id
            and units.identity = traits.identity
            and traits.valid_from <= units.{{ at_column }}
            and (traits.valid_to is null or traits.valid_to > units.{{ at_column }})
    where traits.trait_key in (
        {%- for column in trait_columns -%}
        {{ flagsmith_warehouse.sql_text_literal(column.key) }}{{ ', ' if not loop.last }}
        {%- endfor -%}
    )
    group by units.environment_id, units.identity, units.feature_id
{%- endmacro %}


{#- ------------------------------------------------------------ chi-square upper tail -#}

{% macro chi_square_upper_tail(statistic, degrees_of_freedom, max_degrees_of_freedom=40) -%}
    {#- P(X > statistic) for X chi-square with `degrees_of_freedom` (an integer expression, 1 to
        `max_degrees_of_freedom`; null beyond), in plain SQL that DuckDB, Postgres and Spark all
        run (none has an incomplete gamma function). With h = statistic / 2:
        - even k: exp(-h) * sum over r < k/2 of h^r / r!
        - odd k: erfc(sqrt(h)) + exp(-h) / sqrt(pi) * sum over 1 <= r <= (k-1)/2 of
          2^r h^(r-1/2) / (2r-1)!!
        The sums are written out term by term here (constants computed in Jinja), each term
        switched off past its k. erfc is the Chebyshev fit of Numerical Recipes (erfcc, relative
        error below 1.2e-7). Past h = 600 the tail is below 1e-200 for every k here: 0, which
        also keeps exp() from underflowing (Postgres raises on underflow). tests/test_srm.py
        checks it against scipy's chi2.sf. -#}
    {%- set h = '(cast(' ~ statistic ~ ' as '
        ~ flagsmith_warehouse.sql_type('double precision') ~ ') / 2.0)' -%}
    {%- set k = '(' ~ degrees_of_freedom ~ ')' -%}
    {%- set half = (max_degrees_of_freedom // 2) -%}
    {%- set z = 'sqrt(' ~ h ~ ')' -%}
    {%- set t = '(1.0 / (1.0 + 0.5 * ' ~ z ~ '))' -%}
    {%- set coefficients = [
        -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
        0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277
    ] -%}
    {%- set polynomial = namespace(text='0.17087277') -%}
    {%- for coefficient in coefficients[:-1] | reverse -%}
        {%- set polynomial.text = coefficient ~ ' + ' ~ t ~ ' * (' ~ polynomial.text ~ ')' -%}
    {%- endfor -%}
    {%- set erfc = t ~ ' * exp(-' ~ h ~ ' + ' ~ polynomial.text ~ ')' -%}
    {%- set factorial = namespace(value=1) -%}
    {%- set double_factorial = namespace(value=1) -%}
    case
        when {{ statistic }} is null or {{ k }} is null or {{ k }} < 1
            or {{ k }} > {{ max_degrees_of_freedom }} then null
        when {{ statistic }} <= 0 then 1.0
        when {{ h }} > 600 then 0.0
        when mod({{ k }}, 2) = 0 then exp(-{{ h }}) * (
            1.0
            {%- for r in range(1, half) %}
            {%- set factorial.value = factorial.value * r %}
            + case
                when {{ k }} > {{ 2 * r }} then power({{ h }}, {{ r }}) / {{ factorial.value }}.0
                else 0.0
            end
            {%- endfor %}
        )
        else {{ erfc }} + exp(-{{ h }}) / {{ (3.141592653589793 ** 0.5) }} * (
            0.0
            {%- for r in range(1, half + 1) %}
            {%- set double_factorial.value = double_factorial.value * (2 * r - 1) %}
            + case when {{ k }} >= {{ 2 * r + 1 }}
                then {{ 2 ** r }}.0 * power({{ h }}, {{ r - 0.5 }}) / {{ double_factorial.value }}.0
                else 0.0 end
            {%- endfor %}
        )
    end
{%- endmacro %}
