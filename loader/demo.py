"""`make demo`: the whole path on simulated traffic, ending with what an analyst looks at first."""

from __future__ import annotations

import hmac
import os
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .config import ConfigError, Settings
from .payload import classify
from .pipeline import load
from .processes import free_port, start_receiver, stop, wait_ready
from .signature import sign
from .simulate import SimulatedWebhook
from .spool import Delivery, SpoolWriter, new_delivery_id
from .transform import SCHEDULED_BUILD, run_dbt

_MARKER = ".flagsmith-warehouse-demo"
DEMO_SECRET = "demo-secret"


def _prepare(data_dir: Path) -> None:
    if data_dir.exists():
        if not (data_dir / _MARKER).exists() and any(data_dir.iterdir()):
            raise ConfigError(
                f"{data_dir} exists and is not a demo folder; choose another --data-dir"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / _MARKER).write_text("made by flagsmith-warehouse demo; wiped by the next one\n")


HISTORY_PER_DAY = 250
"""Simulated identify calls per day of history: enough identities per test for the SRM check."""


def write_history(spool_dir: Path, history: list[SimulatedWebhook], secret: bytes) -> int:
    """Lay the simulator's generated history into the spool, stamped with its simulated receipt
    times and `signature_status` `simulated`, for the real loader to take.

    Only deliveries this process generated get here: each must carry the simulator's signature
    for the demo's secret, and nothing else in the project writes `simulated`. It is not a way
    for real deliveries to skip the receiver: there is no command or URL that takes bodies into
    this path."""
    for delivery in history:
        if not hmac.compare_digest(sign(delivery.body, secret), delivery.signature):
            raise ValueError("write_history takes only deliveries the simulator signed")
    writer = SpoolWriter(spool_dir, segment_bytes=8 << 20, segment_seconds=3600)
    try:
        for delivery in history:
            verdict = classify(delivery.body)
            writer.append(
                Delivery(
                    new_delivery_id(delivery.at),
                    delivery.at,
                    delivery.body,
                    delivery.environment_key,
                    "simulated",
                    None,
                    verdict.kind,
                    verdict.reason,
                )
            )
    finally:
        writer.close()
    return len(history)


def run_demo(
    data_dir: Path,
    *,
    deliveries: int = 400,
    identities: int = 300,
    history_days: int = 28,
) -> int:
    from .report import write_report
    from .simulate import demo_timeline, generate, post_all

    if deliveries < 1 or identities < 2 or history_days < 0:
        raise ConfigError("demo needs --deliveries >= 1, --identities >= 2, --history-days >= 0")
    started = time.monotonic()
    data_dir = data_dir.absolute()
    _prepare(data_dir)
    secret = os.environ.get("FLAGSMITH_WEBHOOK_SECRET", "").split(",")[0].strip() or DEMO_SECRET
    env = dict(os.environ)
    env.update(
        FLAGSMITH_WEBHOOK_SECRET=secret,
        FLAGSMITH_WAREHOUSE="duckdb",
        FLAGSMITH_SPOOL_DIR=str(data_dir / "spool"),
        FLAGSMITH_DUCKDB_PATH=str(data_dir / "warehouse.duckdb"),
        FLAGSMITH_STATE_DIR=str(data_dir / "state"),
    )
    env.pop("FLAGSMITH_DBT_SCHEMA", None)
    settings = Settings.from_env(env)

    # One simulated project: weeks of history that ends now, then the live webhooks.
    history_count = history_days * HISTORY_PER_DAY
    now = datetime.now(UTC)
    history_start = now - timedelta(days=history_days)
    # About one call in 13 is the same client again within seconds (simulate.py): the others'
    # mean gap is stretched so that the history ends about now.
    stream = generate(
        history_count + deliveries,
        seed=7,
        n_identities=identities,
        n_environments=2,
        start=history_start,
        mean_interval=history_days * 86_400 * 1.08 / history_count if history_count else 45.0,
        secret=secret.encode(),
        operator_interval=None,
        timeline=demo_timeline(history_start, history_days) if history_days else (),
    )
    # history stamped after now would come after the live webhooks: it joins them instead
    history = [delivery for delivery in stream[:history_count] if delivery.at < now]
    live = stream[len(history) :]
    if history:
        print(
            f"1/5 laying down {len(history)} simulated deliveries over {history_days} days "
            f"({history[0].at:%Y-%m-%d} to {history[-1].at:%Y-%m-%d}) into the spool",
            flush=True,
        )
        write_history(settings.spool_dir, history, secret.encode())
        summary = load(settings)
        print(f"    {summary.line()}", flush=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    print(f"2/5 starting the receiver on {base_url}", flush=True)
    receiver = start_receiver(env, port)
    try:
        wait_ready(base_url, receiver)
        print(f"3/5 posting {len(live)} signed identity webhooks over HTTP", flush=True)
        answers = post_all(base_url, live, concurrency=8)
    finally:
        stop(receiver)
    statuses = Counter(status for status, _ in answers)
    print(f"    answers: {dict(sorted(statuses.items()))}", flush=True)
    print("4/5 loading the spool into flagsmith_raw with dlt", flush=True)
    summary = load(settings)
    print(f"    {summary.line()}", flush=True)
    print("5/5 building the marts with dbt", flush=True)
    status = run_dbt(settings, "build", [*SCHEDULED_BUILD, "--quiet"])
    if status != 0:
        print(f"dbt build failed with exit code {status}", file=sys.stderr)
        return status
    print_report(settings.duckdb_path)
    report = write_report(settings, data_dir / "report.html")
    query = "select * from flagsmith.flagsmith__experiments"
    print(
        f"\nThe report (open it in a browser): {report}\n"
        f"The warehouse is {settings.duckdb_path}. Look around with, for example:\n"
        f"  .venv/bin/python -c \"import duckdb; duckdb.connect('{settings.duckdb_path}',"
        f" read_only=True).sql('{query}').show()\"\n"
        f"demo finished in {time.monotonic() - started:.0f}s"
    )
    return 0 if statuses.get(202, 0) == len(live) else 1


OVERVIEW_SQL = """
select
    environments.environment_id,
    coalesce(environments.environment_keys, ''),
    environments.identities,
    environments.deliveries,
    strftime(environments.first_seen_at, '%Y-%m-%d'),
    strftime(environments.last_seen_at, '%Y-%m-%d'),
    date_diff('day', environments.first_seen_at, environments.last_seen_at) + 1
from flagsmith.flagsmith__environments as environments
order by environments.environment_id
"""

EXPERIMENTS_SQL = """
with arms as (
    select environment_id, feature_id, first_arm, count(*) as identities
    from flagsmith.flagsmith__experiment_exposures
    group by all
)
select
    experiments.environment_id,
    experiments.feature_name,
    strftime(experiments.first_exposed_at, '%Y-%m-%d'),
    strftime(experiments.last_exposed_at, '%Y-%m-%d'),
    string_agg(arms.first_arm || ' ' || arms.identities, ', ' order by arms.first_arm),
    experiments.multi_arm_identities,
    coalesce(printf('%.3g', experiments.srm_p_value), 'n/a (too few, or no split reported)')
from flagsmith.flagsmith__experiments as experiments
inner join arms using (environment_id, feature_id)
group by all
order by experiments.environment_id, experiments.feature_name
"""

DAILY_TEST_SQL = """
with test as (
    -- the demo's scripted test (started, ramped, stopped), else the one with most identities
    select environment_id, feature_id, feature_name
    from flagsmith.flagsmith__experiments
    order by feature_name = 'checkout_button' desc, environment_id, identities_exposed desc
    limit 1
),
days as (
    select daily.exposure_date, daily.variant, daily.identities, daily.first_exposures
    from flagsmith.flagsmith__daily_feature_exposures as daily
    inner join test using (environment_id, feature_id)
    where daily.exposure_date > (
        select max(exposure_date) - 10 from flagsmith.flagsmith__daily_feature_exposures
    )
)
select
    (select feature_name || ' in environment ' || environment_id from test),
    cast(exposure_date as varchar),
    string_agg(variant || ' ' || identities || ' (' || first_exposures || ' new)', ', '
        order by variant)
from days
group by exposure_date
order by exposure_date
"""

SEGMENT_DAYS_SQL = """
with segment as (
    select environment_id, segment_id, segment_name
    from flagsmith.flagsmith__daily_segment_memberships
    group by environment_id, segment_id, segment_name
    -- the demo's growing segment, else the one that moved most
    order by
        segment_name = 'gradual_rollout' desc,
        environment_id,
        max(members) - min(members) desc,
        segment_id
    limit 1
)
select
    segment.segment_name || ' in environment ' || segment.environment_id,
    cast(daily.membership_date as varchar),
    daily.members,
    daily.entered,
    daily.exited
from flagsmith.flagsmith__daily_segment_memberships as daily
inner join segment using (environment_id, segment_id)
where daily.membership_date > (
    select max(membership_date) - 10 from flagsmith.flagsmith__daily_segment_memberships
)
order by daily.membership_date
"""


def print_report(duckdb_path: Path) -> None:
    """The first look: what the warehouse holds over time, the tests, one test's days and the
    segment that moved most, day by day."""
    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True) as connection:
        connection.execute("set TimeZone = 'UTC'")
        overview = connection.execute(OVERVIEW_SQL).fetchall()
        experiments = connection.execute(EXPERIMENTS_SQL).fetchall()
        daily_test = connection.execute(DAILY_TEST_SQL).fetchall()
        segment_days = connection.execute(SEGMENT_DAYS_SQL).fetchall()
    print("\nEnvironments (flagsmith__environments):")
    print_table(
        ("environment", "keys", "identities", "deliveries", "first", "last", "days"), overview
    )
    print("\nExperiments (flagsmith__experiments, arms from flagsmith__experiment_exposures):")
    print_table(
        (
            "environment",
            "experiment",
            "first exposed",
            "last exposed",
            "identities by first arm",
            "multi-arm",
            "SRM p-value",
        ),
        experiments,
    )
    print(
        "  (counts are lifetime, by first arm, while the shares are the latest: a test ramped "
        "mid-way, as checkout_button in production here, shows as a mismatch; docs/experiments.md)"
    )
    if daily_test:
        print(
            f"\nDaily exposures of {daily_test[0][0]}, last days "
            "(flagsmith__daily_feature_exposures: identities per variant, new = first exposure):"
        )
        print_table(("date", "identities per variant"), [row[1:] for row in daily_test])
    if segment_days:
        print(f"\nSegment {segment_days[0][0]}, last days (flagsmith__daily_segment_memberships):")
        print_table(("date", "members", "entered", "exited"), [row[1:] for row in segment_days])


def print_table(headers: tuple[str, ...], rows: list[tuple]) -> None:
    table = [headers, *[tuple("" if v is None else str(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
