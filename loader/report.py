"""`flagsmith-warehouse report`: one self-contained HTML page of the marts over time.

Per experiment: identities per arm over time (cumulative, by the arm of each identity's first
experiment period, which is what the sample-ratio check counts) and the SRM verdict; per
segment: members per day. The charts are matplotlib figures inlined as SVG (text drawn as
paths), the page a Jinja2 template with its style inline: nothing is fetched when it is viewed.
Every figure a chart shows is also in a table beside it.

It reads the marts of the configured warehouse (DuckDB or Postgres). Dates are local dates in
the reporting time zone: the daily segment mart's own, and for experiments the local date of
`first_exposed_at` in FLAGSMITH_REPORTING_TIMEZONE (UTC when unset), as the marts use it.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .config import Settings

SRM_ALPHA = 0.001
"""A sample-ratio mismatch is flagged below this p-value (the usual, strict threshold)."""


class ReportError(RuntimeError):
    """The report cannot be made; the message says why."""


def reporting_timezone() -> str:
    name = (os.environ.get("FLAGSMITH_REPORTING_TIMEZONE") or "").strip() or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"FLAGSMITH_REPORTING_TIMEZONE must be an IANA time zone name, not {name!r}"
        ) from None
    return name


# --- reading the marts --------------------------------------------------------------------------


@dataclass
class Experiment:
    environment_id: int
    feature_id: int
    name: str
    environment_label: str
    identities_exposed: int
    multi_arm_identities: int
    srm_chi_square: float | None
    srm_degrees_of_freedom: int | None
    srm_p_value: float | None
    last_exposed_date: date | None = None  # local date of the latest experiment evaluation
    # arm -> [(local date, identities whose first arm it is, first exposed that day)]
    new_by_arm: dict[str, list[tuple[date, int]]] = field(default_factory=dict)
    chart: str = ""  # the SVG, once drawn

    @property
    def dates(self) -> list[date]:
        """Dates with a first exposure, and the last date anyone was exposed: the chart runs on
        to where the test stands now, not to its last newcomer."""
        days = {day for rows in self.new_by_arm.values() for day, _ in rows}
        if days and self.last_exposed_date is not None:
            days.add(max(self.last_exposed_date, max(days)))
        return sorted(days)

    def cumulative(self) -> list[tuple[date, dict[str, int]]]:
        """Per date, identities per arm so far (by first arm)."""
        totals = dict.fromkeys(self.new_by_arm, 0)
        new = {arm: dict(rows) for arm, rows in self.new_by_arm.items()}
        rows = []
        for day in self.dates:
            for arm in totals:
                totals[arm] += new[arm].get(day, 0)
            rows.append((day, dict(totals)))
        return rows

    @property
    def verdict(self) -> str:
        if self.srm_p_value is None:
            return (
                "not computed: fewer than 100 identities, an expected count under 5, one arm, "
                "or the split's shares not reported"
            )
        if self.srm_p_value < SRM_ALPHA:
            return f"sample-ratio mismatch (p = {self.srm_p_value:.3g} < {SRM_ALPHA})"
        return f"no mismatch detected (p = {self.srm_p_value:.3g})"

    @property
    def is_mismatch(self) -> bool:
        return self.srm_p_value is not None and self.srm_p_value < SRM_ALPHA


@dataclass
class SegmentSeries:
    environment_id: int
    segment_id: int
    name: str
    environment_label: str
    days: list[tuple[date, int, int, int]]  # date, members, entered, exited


def _connect(settings: Settings):
    """An `execute(sql) -> rows` on the configured warehouse, and a close function."""
    if settings.warehouse == "duckdb":
        import duckdb

        path = settings.duckdb_path
        if not path.exists():
            raise ReportError(
                f"the DuckDB file {path} does not exist: run `flagsmith-warehouse run`"
            )
        try:
            connection = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as error:
            raise ReportError(
                f"cannot open {path} (a load or transform may hold it; try again): {error}"
            ) from None
        connection.execute("set TimeZone = 'UTC'")
        return (lambda sql: connection.execute(sql).fetchall()), connection.close
    if settings.warehouse == "postgres":
        import psycopg2

        from .config import postgres_connection_parameters

        try:
            connection = psycopg2.connect(**postgres_connection_parameters(), connect_timeout=5)
        except psycopg2.Error as error:
            raise ReportError(
                f"cannot connect to Postgres: {' '.join(str(error).split())}"
            ) from None
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute("set time zone 'UTC'")

        def execute(sql: str) -> list[tuple]:
            cursor.execute(sql)
            return cursor.fetchall()

        return execute, connection.close
    raise ReportError(
        f"report reads DuckDB or Postgres; for {settings.warehouse}, point it at a copy of the "
        "marts in one of those"
    )


def read_marts(settings: Settings, zone: str) -> tuple[list[Experiment], list[SegmentSeries]]:
    schema = settings.marts_schema
    execute, close = _connect(settings)
    try:
        present = {
            row[0]
            for row in execute(
                f"select table_name from information_schema.tables where table_schema = '{schema}'"
            )
        }
        needed = [
            "flagsmith__experiments",
            "flagsmith__experiment_exposures",
            "flagsmith__daily_segment_memberships",
            "flagsmith__environments",
        ]
        missing = [name for name in needed if name not in present]
        if missing:
            raise ReportError(
                f"the warehouse has no {', '.join(missing)} in schema {schema}: run "
                "`flagsmith-warehouse run` (or `transform`) first"
            )
        labels = {
            row[0]: f"{row[0]} ({row[1]})" if row[1] else str(row[0])
            for row in execute(
                f"select environment_id, environment_keys from {schema}.flagsmith__environments"
            )
        }
        experiments = {
            (row[0], row[1]): Experiment(
                environment_id=row[0],
                feature_id=row[1],
                name=row[2],
                environment_label=labels.get(row[0], str(row[0])),
                identities_exposed=row[3],
                multi_arm_identities=row[4],
                srm_chi_square=row[5],
                srm_degrees_of_freedom=row[6],
                srm_p_value=row[7],
                last_exposed_date=row[8],
            )
            for row in execute(
                "select environment_id, feature_id, feature_name, identities_exposed,"
                " multi_arm_identities, srm_chi_square, srm_degrees_of_freedom, srm_p_value,"
                f" cast(last_exposed_at at time zone '{zone}' as date)"
                f" from {schema}.flagsmith__experiments"
            )
        }
        by_arm: dict[tuple[int, int], dict[str, list[tuple[date, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for environment_id, feature_id, arm, day, count in execute(
            f"select environment_id, feature_id, first_arm,"
            f" cast(first_exposed_at at time zone '{zone}' as date) as first_date, count(*)"
            f" from {schema}.flagsmith__experiment_exposures group by 1, 2, 3, 4 order by 4"
        ):
            by_arm[(environment_id, feature_id)][arm].append((day, int(count)))
        for key, arms in by_arm.items():
            if key in experiments:
                experiments[key].new_by_arm = dict(sorted(arms.items()))
        segments: dict[tuple[int, int], SegmentSeries] = {}
        for environment_id, segment_id, name, day, members, entered, exited in execute(
            "select environment_id, segment_id, segment_name, membership_date, members,"
            f" entered, exited from {schema}.flagsmith__daily_segment_memberships"
            " order by environment_id, segment_id, membership_date"
        ):
            series = segments.setdefault(
                (environment_id, segment_id),
                SegmentSeries(environment_id, segment_id, name, labels.get(environment_id, ""), []),
            )
            series.days.append((day, int(members), int(entered), int(exited)))
    finally:
        close()
    ordered = sorted(experiments.values(), key=lambda e: (e.environment_id, e.name))
    return ordered, sorted(segments.values(), key=lambda s: (s.environment_id, s.name))


# --- drawing ------------------------------------------------------------------------------------


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"  # glyphs as paths: no font is needed to view it
    plt.rcParams["svg.hashsalt"] = "flagsmith-warehouse"  # the same marts give the same page
    figure, axes = plt.subplots(figsize=(8, 3.2))
    axes.set_title(title, loc="left", fontsize=11)
    axes.grid(True, alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def experiment_chart(experiment: Experiment) -> str:
    import matplotlib.dates as mdates

    figure, axes = _figure(f"{experiment.name}: identities by first arm, cumulative")
    rows = experiment.cumulative()
    days = [day for day, _ in rows]
    for arm in experiment.new_by_arm:
        axes.step(days, [totals[arm] for _, totals in rows], where="post", label=arm)
    axes.set_ylim(bottom=0)  # counts: an axis from zero does not exaggerate a gap
    axes.set_ylabel("identities")
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    axes.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.autofmt_xdate()
    return _svg(figure)


def segments_chart(environment_label: str, series: list[SegmentSeries]) -> str:
    import matplotlib.dates as mdates

    figure, axes = _figure(f"Segment members per day, environment {environment_label}")
    for segment in series:
        axes.plot(
            [day for day, *_ in segment.days],
            [members for _, members, _, _ in segment.days],
            label=segment.name,
        )
    axes.set_ylim(bottom=0)
    axes.set_ylabel("members")
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    # beside the plot, not over it: a segment's line may run anywhere
    axes.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.autofmt_xdate()
    return _svg(figure)


# --- the page -----------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Flagsmith warehouse report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #1d2330; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2.5rem; border-bottom: 1px solid #d8dce4; }
h3 { font-size: 1.05rem; margin: 1.8rem 0 .3rem; }
.meta { color: #5b6475; }
.verdict { padding: .35rem .6rem; border-radius: 4px; display: inline-block; }
.verdict.mismatch { background: #fde2e1; color: #8a1c12; }
.verdict.ok { background: #e2f4e6; color: #1d5a2b; }
.verdict.none { background: #eef0f4; color: #4a5263; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { padding: .2rem .7rem; border-bottom: 1px solid #e6e9ef; text-align: right; }
th:first-child, td:first-child { text-align: left; }
details { margin: .4rem 0 1rem; }
svg { max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>Flagsmith warehouse report</h1>
<p class="meta">From the marts of the {{ warehouse }} warehouse, made {{ made_at }}. Dates are
local dates in {{ zone }}.</p>

<h2>Experiments</h2>
<p class="meta">Identities by the arm of their first experiment period, cumulative: the counts
the sample-ratio check compares with the split's latest shares (a test ramped mid-way shows as a
mismatch; docs/experiments.md).</p>
{% if not experiments %}<p>No experiment has exposed anyone yet.</p>{% endif %}
{% for e in experiments %}
<section class="experiment" id="experiment-{{ e.environment_id }}-{{ e.feature_id }}">
<h3>{{ e.name }} <span class="meta">environment {{ e.environment_label }}</span></h3>
{%- set tone = 'mismatch' if e.is_mismatch else 'none' if e.srm_p_value is none else 'ok' %}
<p><span class="verdict {{ tone }}"
 data-srm-p-value="{{ '' if e.srm_p_value is none else e.srm_p_value }}">SRM: {{ e.verdict }}</span>
 &nbsp; {{ e.identities_exposed }} identities exposed, {{ e.multi_arm_identities }} saw more than
 one arm{% if e.srm_chi_square is not none %}; chi-square {{ '%.3f' % e.srm_chi_square }} with
 {{ e.srm_degrees_of_freedom }} degrees of freedom{% endif %}.</p>
{{ e.chart | safe }}
<details><summary>Identities by first arm, per day (cumulative)</summary>
<table class="arms">
<tr><th>date</th>{% for arm in e.new_by_arm %}<th>{{ arm }}</th>{% endfor %}</tr>
{% for day, totals in e.cumulative() %}
<tr><td>{{ day }}</td>
{%- for arm in e.new_by_arm %}<td data-arm="{{ arm }}">{{ totals[arm] }}</td>{% endfor %}</tr>
{% endfor %}
</table></details>
</section>
{% endfor %}

<h2>Segments</h2>
<p class="meta">Members at the end of each day: identities whose latest delivery so far lists
them as members (flagsmith__daily_segment_memberships). An identity counts from its first
delivery on, so the first days of a history climb as identities are first seen.</p>
{% if not segment_groups %}<p>No segment has had a member yet.</p>{% endif %}
{% for label, chart, series in segment_groups %}
<section class="segments">
{{ chart | safe }}
{% for s in series %}
<details class="segment" id="segment-{{ s.environment_id }}-{{ s.segment_id }}">
<summary>{{ s.name }}, environment {{ label }}:
 {{ s.days[-1][1] }} members on {{ s.days[-1][0] }}</summary>
<table>
<tr><th>date</th><th>members</th><th>entered</th><th>exited</th></tr>
{% for day, members, entered, exited in s.days %}
<tr><td>{{ day }}</td><td>{{ members }}</td><td>{{ entered }}</td><td>{{ exited }}</td></tr>
{% endfor %}
</table></details>
{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def render(
    experiments: list[Experiment], segments: list[SegmentSeries], *, warehouse: str, zone: str
) -> str:
    from jinja2 import Environment

    groups: dict[int, list[SegmentSeries]] = defaultdict(list)
    for segment in segments:
        groups[segment.environment_id].append(segment)
    segment_groups = [
        (series[0].environment_label, segments_chart(series[0].environment_label, series), series)
        for _environment, series in sorted(groups.items())
    ]
    for experiment in experiments:
        experiment.chart = experiment_chart(experiment) if experiment.new_by_arm else ""
    template = Environment(autoescape=True).from_string(PAGE)
    return template.render(
        experiments=experiments,
        segment_groups=segment_groups,
        warehouse=warehouse,
        zone=zone,
        made_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(settings: Settings, output: Path) -> Path:
    """Write the page to `output` (its folder is created) and return its absolute path."""
    zone = reporting_timezone()
    experiments, segments = read_marts(settings, zone)
    page = render(experiments, segments, warehouse=settings.warehouse, zone=zone)
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, output)
    return output
