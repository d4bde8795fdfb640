"""`flagsmith-warehouse report` and `docs`: the figures the page shows equal the marts', the page
needs nothing from the network, and both refuse a warehouse that does not exist."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from itertools import pairwise

import pytest

from loader.cli import main
from loader.report import SRM_ALPHA, ReportError, write_report
from loader.simulate import demo_timeline, iter_deliveries

from .warehouse import Posted, connect, dbt, land, warehouse_settings

START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
DAYS = 8


def _traffic() -> list[Posted]:
    """Eight days of the demo's scripted project: tests started, ramped and stopped."""
    return [
        Posted(d.body, d.at, d.environment_key)
        for d in iter_deliveries(
            3000,
            seed=11,
            n_identities=400,
            n_environments=2,
            start=START,
            mean_interval=DAYS * 86_400 * 1.08 / 3000,
            operator_interval=None,
            timeline=demo_timeline(START, DAYS),
        )
    ]


class _Page(HTMLParser):
    """The sections of the report: per experiment its SRM p-value and table rows, per segment
    its table rows, and every URL the page refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.experiments: dict[str, dict] = {}
        self.segments: dict[str, list[list[str]]] = defaultdict(list)
        self.urls: list[str] = []
        self._section: tuple[str, str] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "xlink:href"):
            if attrs.get(name) and not attrs[name].startswith("#"):
                self.urls.append(attrs[name])
        element_id = attrs.get("id") or ""
        if tag == "section" and element_id.startswith("experiment-"):
            self._section = ("experiment", element_id)
            self.experiments[element_id] = {"arms": [], "rows": []}
        elif tag == "details" and element_id.startswith("segment-"):
            self._section = ("segment", element_id)
        elif tag == "span" and "data-srm-p-value" in attrs and self._section:
            self.experiments[self._section[1]]["p"] = attrs["data-srm-p-value"]
            self._cell = []  # the verdict's text, collected like a cell's
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "span" and self._cell is not None and self._row is None and self._section:
            self.experiments[self._section[1]]["verdict"] = "".join(self._cell).strip()
            self._cell = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section:
            kind, key = self._section
            if kind == "experiment":
                target = self.experiments[key]
                if self._row[0] == "date":
                    target["arms"] = self._row[1:]
                else:
                    target["rows"].append(self._row)
            elif self._row[0] != "date":
                self.segments[key].append(self._row)
            self._row = None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    settings = warehouse_settings(tmp_path_factory.mktemp("report"))
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    traffic = _traffic()
    assert land(settings, traffic) == len(traffic)
    result = dbt(settings, "build", "--exclude-resource-type", "unit_test")
    assert result.returncode == 0, result.output[-3000:]
    return settings


def test_the_report_shows_the_marts_figures(built, tmp_path):
    path = write_report(built, tmp_path / "out" / "report.html")
    page = _Page()
    page.feed(path.read_text())

    with connect(built) as connection:
        experiments = connection.execute(
            "select environment_id, feature_id, identities_exposed, srm_p_value,"
            " cast(last_exposed_at at time zone 'UTC' as date)"
            " from flagsmith.flagsmith__experiments"
        ).fetchall()
        first_arms = connection.execute(
            "select environment_id, feature_id, first_arm, count(*)"
            " from flagsmith.flagsmith__experiment_exposures group by 1, 2, 3"
        ).fetchall()
        segment_days = connection.execute(
            "select environment_id, segment_id, membership_date, members, entered, exited"
            " from flagsmith.flagsmith__daily_segment_memberships"
        ).fetchall()

    assert len(experiments) >= 2
    assert any(row[3] is not None for row in experiments), "an SRM p-value to show"
    assert set(page.experiments) == {f"experiment-{e}-{f}" for e, f, *_ in experiments}
    arms_per_experiment = defaultdict(dict)
    for environment_id, feature_id, arm, count in first_arms:
        arms_per_experiment[f"experiment-{environment_id}-{feature_id}"][arm] = count
    for environment_id, feature_id, exposed, p_value, last_day in experiments:
        shown = page.experiments[f"experiment-{environment_id}-{feature_id}"]
        assert (float(shown["p"]) if shown["p"] else None) == p_value
        if p_value is None:
            assert shown["verdict"].startswith("SRM: not computed")
        elif p_value < SRM_ALPHA:
            assert shown["verdict"].startswith("SRM: sample-ratio mismatch (p = ")
        else:
            assert shown["verdict"] == f"SRM: no mismatch detected (p = {p_value:.3g})"
        expected = arms_per_experiment[f"experiment-{environment_id}-{feature_id}"]
        assert shown["arms"] == sorted(expected)
        last = dict(zip(shown["arms"], map(int, shown["rows"][-1][1:]), strict=True))
        assert last == expected  # the cumulative identities by first arm at the end
        assert sum(last.values()) == exposed
        assert shown["rows"][-1][0] == str(last_day)  # the chart runs to the last exposure
        counts = [list(map(int, row[1:])) for row in shown["rows"]]
        for earlier, later in pairwise(counts):
            assert all(a <= b for a, b in zip(earlier, later, strict=True)), "cumulative"

    expected_segments = defaultdict(list)
    for environment_id, segment_id, day, members, entered, exited in sorted(segment_days):
        expected_segments[f"segment-{environment_id}-{segment_id}"].append(
            [str(day), str(members), str(entered), str(exited)]
        )
    assert dict(page.segments) == dict(expected_segments)
    assert max(len(rows) for rows in expected_segments.values()) >= DAYS

    assert page.urls == [], "the page must need nothing from the network"
    text = path.read_text()
    assert "<script" not in text
    assert not re.search(r"url\(\s*['\"]?https?:", text)
    assert text.count("<svg") == len(experiments) + 2  # one chart per environment's segments


def test_the_report_dates_follow_the_reporting_time_zone(built, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", "Pacific/Kiritimati")  # UTC+14
    page = _Page()
    page.feed(write_report(built, tmp_path / "east.html").read_text())
    monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", "UTC")
    utc = _Page()
    utc.feed(write_report(built, tmp_path / "utc.html").read_text())
    for key, shown in utc.experiments.items():
        first_utc = datetime.fromisoformat(shown["rows"][0][0]).date()
        first_east = datetime.fromisoformat(page.experiments[key]["rows"][0][0]).date()
        assert first_east - first_utc in (timedelta(0), timedelta(days=1))
    assert "Dates are\nlocal dates in Pacific/Kiritimati" in (tmp_path / "east.html").read_text()


def test_report_refuses_a_missing_warehouse(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(tmp_path / "nothing.duckdb"))
    assert main(["report", "--output", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nothing.duckdb").exists()
    assert not (tmp_path / "r.html").exists()


def test_report_refuses_a_warehouse_without_marts(tmp_path, monkeypatch):
    settings = warehouse_settings(tmp_path / "raw-only")
    settings.duckdb_path.parent.mkdir(parents=True)
    land(settings, _traffic()[:5])
    with pytest.raises(ReportError, match="run `flagsmith-warehouse run`"):
        write_report(settings, tmp_path / "r.html")


def test_report_refuses_an_unknown_time_zone(built, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAGSMITH_REPORTING_TIMEZONE", "Moon/Tranquility")
    with pytest.raises(ReportError, match="IANA time zone name"):
        write_report(built, tmp_path / "r.html")


def test_docs_refuses_a_missing_warehouse(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(tmp_path / "nothing.duckdb"))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(tmp_path / "state"))
    assert main(["docs"]) == 2
    err = capsys.readouterr().err
    assert f"docs: the DuckDB file {tmp_path / 'nothing.duckdb'} does not exist" in err
    assert not (tmp_path / "nothing.duckdb").exists()


def test_docs_refuses_a_postgres_database_that_does_not_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_WAREHOUSE", "postgres")
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGDATABASE", "flagsmith_no_such_database")
    assert main(["docs"]) == 2
    err = capsys.readouterr().err
    assert "docs: cannot connect to Postgres" in err
    assert "flagsmith_no_such_database" in err


def test_docs_generates_for_a_built_warehouse(built, monkeypatch, capsys):
    monkeypatch.setenv("FLAGSMITH_DUCKDB_PATH", str(built.duckdb_path))
    monkeypatch.setenv("FLAGSMITH_STATE_DIR", str(built.state_dir))
    monkeypatch.setenv("FLAGSMITH_DBT_TARGET_PATH", str(built.dbt_target_path))
    assert main(["docs"]) == 0
    assert "docs written to" in capsys.readouterr().out
    catalog = built.dbt_target_path / "catalog.json"
    assert (built.dbt_target_path / "index.html").exists()
    assert "flagsmith__daily_segment_memberships" in catalog.read_text()
