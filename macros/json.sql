{#-
    Warehouse-specific JSON handling, dispatched per adapter.

    The staging models call only these five macros, so a new warehouse needs only a
    `<adapter>__` version of each (for Postgres: jsonb, jsonb_array_elements, jsonb_typeof)
    and no model changes. Conventions every implementation follows:

    - the parsed payload is whatever typed value the warehouse unnests fastest
      (DuckDB: a STRUCT with lists of structs; Postgres: jsonb);
    - `path` is a list of object keys (strings) and array indexes (integers, 0-based as in
      JSON Pointer and Postgres paths; DuckDB lists are 1-based, its macro adds one);
    - a JSON scalar (feature_state_value, trait_value) stays JSON until
      `json_scalar_text` / `json_scalar_type` read it, and JSON null behaves like SQL null.
-#}


{#- ---------------------------------------------------------------- parse_identity_payload -#}

{% macro parse_identity_payload(payload_column) -%}
    {{ return(adapter.dispatch('parse_identity_payload', 'flagsmith_warehouse')(payload_column)) }}
{%- endmacro %}

{% macro default__parse_identity_payload(payload_column) -%}
    {{ flagsmith_warehouse.raise_adapter_not_supported(
        'parse_identity_payload(payload_column)',
        'an expression that parses the JSON text or JSON value in payload_column, once per row, '
        ~ 'into the typed value the other JSON macros read: an object with identity (text), flags, '
        ~ 'traits and segments (lists of objects); feature_state_value and trait_value must stay '
        ~ 'JSON (e.g. postgres: cast(payload_column as jsonb)).'
    ) }}
{%- endmacro %}

{% macro duckdb__parse_identity_payload(payload_column) -%}
    {#- Feature ids are unique within a payload, so the flag list is a plain list of structs.
        Keys Flagsmith adds later are ignored here but kept in the raw payload. -#}
    {%- set flag = {
        'id': 'BIGINT',
        'enabled': 'BOOLEAN',
        'environment': 'BIGINT',
        'feature': {
            'id': 'BIGINT',
            'name': 'VARCHAR',
            'type': 'VARCHAR',
            'created_date': 'VARCHAR',
            'default_enabled': 'BOOLEAN',
            'description': 'VARCHAR',
            'initial_value': 'VARCHAR',
        },
        'feature_state_value': 'JSON',
        'feature_segment': 'BIGINT',
        'identity': 'BIGINT',
        'percentage_allocation': 'DOUBLE',
    } -%}
    {%- set trait = {
        'id': 'BIGINT', 'trait_key': 'VARCHAR', 'trait_value': 'JSON', 'transient': 'BOOLEAN'
    } -%}
    {%- set segment = {'id': 'BIGINT', 'name': 'VARCHAR', 'member': 'BOOLEAN'} -%}
    {%- set payload = {
        'identity': 'VARCHAR', 'flags': [flag], 'traits': [trait], 'segments': [segment]
    } -%}
    from_json({{ payload_column }}, '{{ tojson(payload) }}')
{%- endmacro %}

{% macro postgres__parse_identity_payload(payload_column) -%}
    {#- dlt lands the payload as jsonb already; jsonb is the parsed value (binary, keys indexed),
        so this is a no-op cast there and a parse of JSON text elsewhere (unit test fixtures). -#}
    cast({{ payload_column }} as jsonb)
{%- endmacro %}


{#- ------------------------------------------------------------ without_excluded_traits -#}

{% macro without_excluded_traits(payload, keys) -%}
    {#- The parsed payload with the traits whose trait_key is in `keys` left out of its trait
        list (var flagsmith__excluded_trait_keys); the payload itself when `keys` is empty. -#}
    {%- if not keys -%}
        {{ payload }}
    {%- else -%}
        {{ return(adapter.dispatch('without_excluded_traits', 'flagsmith_warehouse')(
            payload, keys
        )) }}
    {%- endif -%}
{%- endmacro %}

{% macro default__without_excluded_traits(payload, keys) -%}
    {{ flagsmith_warehouse.raise_adapter_not_supported(
        'without_excluded_traits(payload, keys)',
        'the parsed payload with the elements of its traits list whose trait_key is in keys removed'
    ) }}
{%- endmacro %}

{% macro duckdb__without_excluded_traits(payload, keys) -%}
    struct_update(
        {{ payload }},
        traits := list_filter(
            {{ payload }}.traits,
            lambda excluded_trait: excluded_trait.trait_key
                not in ({{ flagsmith_warehouse.text_literals(keys) }})
        )
    )
{%- endmacro %}

{% macro postgres__without_excluded_traits(payload, keys) -%}
    case
        when jsonb_typeof({{ payload }} -> 'traits') = 'array' then jsonb_set(
            {{ payload }},
            '{traits}',
            coalesce(
                (
                    select jsonb_agg(kept.trait order by kept.position)
                    from jsonb_array_elements({{ payload }} -> 'traits')
                        with ordinality as kept (trait, position)
                    where not coalesce(
                        kept.trait ->> 'trait_key'
                            in ({{ flagsmith_warehouse.text_literals(keys) }}),
                        false
                    )
                ),
                '[]'::jsonb
            )
        )
        else {{ payload }}
    end
{%- endmacro %}


{#- ------------------------------------------------------------------------- extract_field -#}

{% macro extract_field(expression, path, data_type=none) -%}
    {{ return(adapter.dispatch('extract_field', 'flagsmith_warehouse')(
        expression, path, data_type
    )) }}
{%- endmacro %}

{% macro default__extract_field(expression, path, data_type=none) -%}
    {{ flagsmith_warehouse.raise_adapter_not_supported(
        'extract_field(expression, path, data_type=none)',
        'the value at path (a list of keys and 0-based array indexes) inside expression (a parsed '
        ~ 'payload or one element of unnest_list), cast to data_type (a portable SQL type name '
        ~ 'such as bigint, boolean, text, double precision, timestamp with time zone); with '
        ~ 'data_type none, the JSON value itself for json_scalar_text/json_scalar_type; null when '
        ~ 'the path is absent (e.g. postgres: cast(expression #>> \'{a,0,b}\' as data_type), or '
        ~ 'expression #> \'{a,0,b}\').'
    ) }}
{%- endmacro %}

{% macro duckdb__extract_field(expression, path, data_type=none) -%}
    {%- set accessors = [] -%}
    {%- for step in path -%}
        {%- if step is number -%}
            {%- do accessors.append('[' ~ (step + 1) ~ ']') -%}
        {%- else -%}
            {%- do accessors.append("['" ~ step ~ "']") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if data_type is none -%}
        {{ expression }}{{ accessors | join('') }}
    {%- else -%}
        cast({{ expression }}{{ accessors | join('') }} as {{ data_type }})
    {%- endif -%}
{%- endmacro %}

{% macro postgres__extract_field(expression, path, data_type=none) -%}
    {#- `#>` / `#>>` with a text[] path: array indexes are 0-based there too. The text form is
        cast, so a JSON string, number or boolean becomes the SQL type; JSON null becomes null. -#}
    {%- set steps = [] -%}
    {%- for step in path -%}
        {%- if step is number -%}
            {%- do steps.append(step | string) -%}
        {%- elif step is string and step.replace('_', '').isalnum() -%}
            {%- do steps.append(step) -%}
        {%- else -%}
            {{ exceptions.raise_compiler_error(
                "extract_field: path steps must be integers or [A-Za-z0-9_] keys, not " ~ step
            ) }}
        {%- endif -%}
    {%- endfor -%}
    {%- set pointer = "'{" ~ (steps | join(',')) ~ "}'" -%}
    {%- if data_type is none -%}
        ({{ expression }} #> {{ pointer }})
    {%- else -%}
        cast({{ expression }} #>> {{ pointer }} as {{ data_type }})
    {%- endif -%}
{%- endmacro %}


{#- --------------------------------------------------------------------------- unnest_list -#}

{% macro unnest_list(relation, list_field, element_column, parsed_column='payload') -%}
    {{ return(adapter.dispatch('unnest_list', 'flagsmith_warehouse')(
        relation, list_field, element_column, parsed_column
    )) }}
{%- endmacro %}

{% macro default__unnest_list(relation, list_field, element_column, parsed_column='payload') -%}
    {{ flagsmith_warehouse.raise_adapter_not_supported(
        'unnest_list(relation, list_field, element_column, parsed_column)',
        'a complete select statement over relation (a CTE name) returning all its columns plus '
        ~ 'element_column, with one row per element of the list parsed_column.list_field and no '
        ~ 'row for an empty or absent list (e.g. postgres: select relation.*, '
        ~ 'elements.element_column from relation cross join lateral '
        ~ 'jsonb_array_elements(relation.parsed_column -> list_field) as elements(element_column)).'
    ) }}
{%- endmacro %}

{% macro duckdb__unnest_list(relation, list_field, element_column, parsed_column='payload') -%}
    select
        {{ relation }}.*,
        unnest({{ relation }}.{{ parsed_column }}['{{ list_field }}']) as {{ element_column }}
    from {{ relation }}
{%- endmacro %}

{% macro postgres__unnest_list(relation, list_field, element_column, parsed_column='payload') -%}
    {#- jsonb_array_elements gives no row for an empty list, and none for a missing one (the
        function is strict); a list element keeps being jsonb. -#}
    select
        {{ relation }}.*,
        {{ element_column }}_elements.value as {{ element_column }}
    from {{ relation }}
    cross join lateral jsonb_array_elements(
        {{ relation }}.{{ parsed_column }} -> '{{ list_field }}'
    ) as {{ element_column }}_elements (value)
{%- endmacro %}


{#- ---------------------------------------------------------------------- json_scalar_text -#}

{% macro json_scalar_text(json_expression) -%}
    {{ return(adapter.dispatch('json_scalar_text', 'flagsmith_warehouse')(json_expression)) }}
{%- endmacro %}

{% macro default__json_scalar_text(json_expression) -%}
    {{ flagsmith_warehouse.raise_adapter_not_supported(
        'json_scalar_text(json_expression)',
        'the JSON scalar as text: strings unquoted and unescaped, numbers and booleans as their '
        ~ 'JSON text (42, 97.5, true), JSON null or a missing value as SQL null (e.g. postgres: '
        ~ 'json_expression #>> \'{}\').'
    ) }}
{%- endmacro %}

{% macro duckdb__json_scalar_text(json_expression) -%}
    json_extract_string({{ json_expression }}, '$')
{%- endmacro %}

{% macro postgres__json_scalar_text(json_expression) -%}
    {#- Strings, booleans and integers: `#>> '{}'` is what DuckDB gives (unquoted, unescaped;
        true/false; the digits). A float is re-rendered as DuckDB (yyjson) renders a double:
        shortest digits, plain decimal with `.0` appended when whole for 1e-6 <= |x| < 1e21
        (`50.0`, `97.5`, `0.00001`), else `<digits>e<exponent>` (`1.5e-7`, `1e21`). jsonb keeps
        the number's exact decimal value, so the digits come from it, not from a float8 whose
        text depends on extra_float_digits. -#}
    case
        when jsonb_typeof({{ json_expression }}) = 'number'
            and ({{ json_expression }} #>> '{}') like '%.%'
            then {{ flagsmith_warehouse.postgres__json_float_text(
                "trim_scale(cast(" ~ json_expression ~ " #>> '{}' as numeric))"
            ) }}
        else {{ json_expression }} #>> '{}'
    end
{%- endmacro %}

{% macro postgres__json_float_text(number) -%}
    {#- `number`: a numeric with no trailing fractional zeros (trim_scale). Its text has no
        exponent: the decimal exponent is where the point is, less the leading zeros. -#}
    {%- set plain = "cast(abs(" ~ number ~ ") as text)" -%}
    {%- set digits_only = "replace(" ~ plain ~ ", '.', '')" -%}
    {%- set significant = "trim(both '0' from " ~ digits_only ~ ")" -%}
    {%- set point = "coalesce(nullif(strpos(" ~ plain ~ ", '.'), 0), length(" ~ plain ~ ") + 1)" -%}
    {%- set leading_zeros =
        "(length(" ~ digits_only ~ ") - length(ltrim(" ~ digits_only ~ ", '0')))" -%}
    case
        when {{ number }} = 0 then '0.0'
        when abs({{ number }}) >= 0.000001 and abs({{ number }}) < 1e21
            then cast({{ number }} as text)
                || case when {{ number }} = trunc({{ number }}) then '.0' else '' end
        else
            case when {{ number }} < 0 then '-' else '' end
            || left({{ significant }}, 1)
            || case when length({{ significant }}) > 1
                then '.' || substr({{ significant }}, 2) else '' end
            || 'e' || cast({{ point }} - 2 - {{ leading_zeros }} as text)
    end
{%- endmacro %}


{#- ---------------------------------------------------------------------- json_scalar_type -#}

{% macro json_scalar_type(json_expression) -%}
    {{ return(adapter.dispatch('json_scalar_type', 'flagsmith_warehouse')(json_expression)) }}
{%- endmacro %}

{% macro default__json_scalar_type(json_expression) -%}
    {{ flagsmith_warehouse.raise_adapter_not_supported(
        'json_scalar_type(json_expression)',
        'the type of the JSON scalar as one of string, integer, float, boolean, null (JSON null '
        ~ 'and a missing value are null; a number is integer when its JSON text has no fraction or '
        ~ 'exponent); an object or array may return any other text, which the data tests reject '
        ~ '(e.g. postgres: jsonb_typeof, splitting number by its text).'
    ) }}
{%- endmacro %}

{% macro duckdb__json_scalar_type(json_expression) -%}
    case coalesce(json_type({{ json_expression }}), 'NULL')
        when 'VARCHAR' then 'string'
        when 'BIGINT' then 'integer'
        when 'UBIGINT' then 'integer'
        when 'HUGEINT' then 'integer'
        when 'DOUBLE' then 'float'
        when 'BOOLEAN' then 'boolean'
        when 'NULL' then 'null'
        else lower(json_type({{ json_expression }}))
    end
{%- endmacro %}

{% macro postgres__json_scalar_type(json_expression) -%}
    {#- jsonb has one number type. DuckDB (yyjson) reads a number with a fraction or an exponent
        as a double, and jsonb keeps a number's decimal scale (`50.0` stays `50.0`, `1e-05`
        becomes `0.00001`), so a point in its text means float. What jsonb cannot keep is an
        exponent of a whole number: `1e+16` reads back as `10000000000000000`, an integer here
        and a float on DuckDB (Python's json writes floats of 1e16 and more that way). -#}
    case coalesce(jsonb_typeof({{ json_expression }}), 'null')
        when 'string' then 'string'
        when 'number' then
            case when ({{ json_expression }} #>> '{}') like '%.%' then 'float' else 'integer' end
        when 'boolean' then 'boolean'
        when 'null' then 'null'
        else jsonb_typeof({{ json_expression }})
    end
{%- endmacro %}


{#- ------------------------------------------------------------------------------ helpers -#}

{% macro raise_adapter_not_supported(signature, must_return) -%}
    {{ exceptions.raise_compiler_error(
        "flagsmith_warehouse." ~ signature ~ " is not implemented for the '" ~ adapter.type()
        ~ "' adapter. Add a macro " ~ adapter.type() ~ "__" ~ signature
        ~ " (in this project or, through the dispatch config, in yours) that returns "
        ~ must_return
    ) }}
{%- endmacro %}


{#- ------------------------------------------------------------------------------ Spark -#}

{#- Spark 4 parses the payload into a VARIANT (`parse_json`): typed like JSON, so a boolean
    `false` and a string "false" stay apart (`schema_of_variant`). A variant keeps a number's
    value, not its text: a fraction becomes a DECIMAL whose trailing zeros are gone (`50.0` is
    DECIMAL(2,0)), an exponent or too many digits a DOUBLE, and an integer beyond BIGINT a
    DECIMAL(p,0) with p >= 19. Flagsmith's serialiser (Python's json) writes a float as its
    shortest repr, in exponent form from 1e16 up, so a DECIMAL(p,0) with p < 19 came from a
    float written with `.0`, and one with p >= 19 from an integer. -#}

{% macro spark__parse_identity_payload(payload_column) -%}
    parse_json({{ payload_column }})
{%- endmacro %}

{% macro spark__json_path(path) -%}
    {%- set steps = ['$'] -%}
    {%- for step in path -%}
        {%- if step is number -%}
            {%- do steps.append('[' ~ step ~ ']') -%}
        {%- elif step is string and step.replace('_', '').isalnum() -%}
            {%- do steps.append('.' ~ step) -%}
        {%- else -%}
            {{ exceptions.raise_compiler_error(
                "extract_field: path steps must be integers or [A-Za-z0-9_] keys, not " ~ step
            ) }}
        {%- endif -%}
    {%- endfor -%}
    '{{ steps | join('') }}'
{%- endmacro %}

{% macro spark__extract_field(expression, path, data_type=none) -%}
    {%- if data_type is none -%}
        variant_get({{ expression }}, {{ flagsmith_warehouse.spark__json_path(path) }})
    {%- else -%}
        variant_get(
            {{ expression }},
            {{ flagsmith_warehouse.spark__json_path(path) }},
            '{{ flagsmith_warehouse.sql_type(data_type) }}'
        )
    {%- endif -%}
{%- endmacro %}

{% macro spark__unnest_list(relation, list_field, element_column, parsed_column='payload') -%}
    {#- explode gives no row for an empty list or a missing (null) one -#}
    select
        {{ relation }}.*,
        {{ element_column }}_elements.{{ element_column }}
    from {{ relation }}
    cross join lateral explode(
        variant_get({{ relation }}.{{ parsed_column }}, '$.{{ list_field }}', 'array<variant>')
    ) as {{ element_column }}_elements ({{ element_column }})
{%- endmacro %}

{% macro spark__json_scalar_type(json_expression) -%}
    case
        when {{ json_expression }} is null or is_variant_null({{ json_expression }}) then 'null'
        when schema_of_variant({{ json_expression }}) = 'STRING' then 'string'
        when schema_of_variant({{ json_expression }}) = 'BOOLEAN' then 'boolean'
        when schema_of_variant({{ json_expression }}) in ('TINYINT', 'SMALLINT', 'INT', 'BIGINT')
            then 'integer'
        when schema_of_variant({{ json_expression }}) rlike '^DECIMAL\\([0-9]+,0\\)$'
            and cast(
                regexp_extract(schema_of_variant({{ json_expression }}), '^DECIMAL\\(([0-9]+),', 1)
                as int
            ) >= 19
            then 'integer'
        when schema_of_variant({{ json_expression }}) rlike '^(DECIMAL|DOUBLE|FLOAT)'
            then 'float'
        else lower(schema_of_variant({{ json_expression }}))
    end
{%- endmacro %}

{% macro spark__json_scalar_text(json_expression) -%}
    case {{ flagsmith_warehouse.spark__json_scalar_type(json_expression) }}
        when 'null' then cast(null as string)
        when 'float' then {{ flagsmith_warehouse.spark__json_float_text(
            "variant_get(" ~ json_expression ~ ", '$', 'string')"
        ) }}
        else variant_get({{ json_expression }}, '$', 'string')
    end
{%- endmacro %}

{% macro spark__json_float_text(number_text) -%}
    {#- `number_text`: a number as Spark writes a DECIMAL (`97.5`, `50`) or a DOUBLE (`1.0E-5`),
        re-rendered as DuckDB (yyjson) renders a double (see postgres__json_scalar_text): plain
        with `.0` when whole for 1e-6 <= |x| < 1e21, else `<digits>e<exponent>`. Worked on the
        text: the digits without sign or point, and where the point falls among them. -#}
    {%- set unsigned = "trim(LEADING '-' FROM " ~ number_text ~ ")" -%}
    {%- set mantissa = "split_part(upper(" ~ unsigned ~ "), 'E', 1)" -%}
    {%- set exponent =
        "coalesce(try_cast(nullif(split_part(upper(" ~ unsigned ~ "), 'E', 2), '') as int), 0)" -%}
    {%- set integer_digits = "split_part(" ~ mantissa ~ ", '.', 1)" -%}
    {%- set digits = "concat(" ~ integer_digits ~ ", split_part(" ~ mantissa ~ ", '.', 2))" -%}
    {%- set significant = "trim(BOTH '0' FROM " ~ digits ~ ")" -%}
    {%- set leading_zeros =
        "(length(" ~ digits ~ ") - length(trim(LEADING '0' FROM " ~ digits ~ ")))" -%}
    {#- the point sits after `point` significant digits: 123.4 -> 3, 0.05 -> -1 -#}
    {%- set point =
        "(length(" ~ integer_digits ~ ") + " ~ exponent ~ " - " ~ leading_zeros ~ ")" -%}
    {%- set sign = "case when " ~ number_text ~ " like '-%' then '-' else '' end" -%}
    case
        when {{ number_text }} is null then cast(null as string)
        when {{ significant }} = '' then concat({{ sign }}, '0.0')
        when {{ point }} >= -5 and {{ point }} <= 21 then concat(
            {{ sign }},
            case
                when {{ point }} <= 0
                    then concat('0.', repeat('0', -{{ point }}), {{ significant }})
                when {{ point }} >= length({{ significant }})
                    then concat(
                        {{ significant }},
                        repeat('0', {{ point }} - length({{ significant }})),
                        '.0'
                    )
                else concat(
                    substr({{ significant }}, 1, {{ point }}),
                    '.',
                    substr({{ significant }}, {{ point }} + 1)
                )
            end
        )
        else concat(
            {{ sign }},
            substr({{ significant }}, 1, 1),
            case when length({{ significant }}) > 1
                then concat('.', substr({{ significant }}, 2)) else '' end,
            'e',
            cast({{ point }} - 1 as string)
        )
    end
{%- endmacro %}

{% macro spark__without_excluded_traits(payload, keys) -%}
    {#- A variant cannot be edited in place: the object is rebuilt from the four keys the models
        read, with the kept traits. -#}
    to_variant_object(named_struct(
        'identity', variant_get({{ payload }}, '$.identity'),
        'flags', variant_get({{ payload }}, '$.flags', 'array<variant>'),
        'traits', filter(
            variant_get({{ payload }}, '$.traits', 'array<variant>'),
            excluded_trait -> not coalesce(
                variant_get(excluded_trait, '$.trait_key', 'string')
                    in ({{ flagsmith_warehouse.text_literals(keys) }}),
                false
            )
        ),
        'segments', variant_get({{ payload }}, '$.segments', 'array<variant>')
    ))
{%- endmacro %}
