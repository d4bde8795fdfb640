{#-
    The reporting time zone (contract.md, "Analyst options"): every date column of the daily
    marts is the local date, in this zone, of the timestamp it comes from; timestamps stay UTC.
-#}


{% macro reporting_timezone() -%}
    {#- var flagsmith__reporting_timezone, else the environment's FLAGSMITH_REPORTING_TIMEZONE,
        else UTC; an IANA name, checked here so that a typo fails at compile time rather than
        as a warehouse error halfway through a build. -#}
    {%- set configured = var('flagsmith__reporting_timezone', none) -%}
    {%- if configured is none or (configured | string | trim) == '' -%}
        {%- set configured = env_var('FLAGSMITH_REPORTING_TIMEZONE', '') | trim or 'UTC' -%}
    {%- endif -%}
    {%- set name = configured | string | trim -%}
    {%- if name not in modules.pytz.all_timezones_set -%}
        {{ exceptions.raise_compiler_error(
            "flagsmith__reporting_timezone (or FLAGSMITH_REPORTING_TIMEZONE) must be an IANA time "
            ~ "zone name such as UTC, Europe/Berlin or America/New_York, not '" ~ name ~ "'"
        ) }}
    {%- endif -%}
    {{ return(name) }}
{%- endmacro %}


{% macro reporting_timezone_state() -%}
    {#- The recorded state of the daily marts (macros/incremental.sql, "Recorded state"): a
        changed zone makes the next run rebuild them whole, never a mix of two zones. -#}
    {{ return('reporting_timezone=' ~ flagsmith_warehouse.reporting_timezone()) }}
{%- endmacro %}
