"""`make demo`: the whole path on simulated traffic, ending with what an analyst looks at first."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from .config import ConfigError, Settings
from .pipeline import load
from .transform import SCHEDULED_BUILD, run_dbt

_MARKER = ".flagsmith-warehouse-demo"
DEMO_SECRET = "demo-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(base_url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the receiver at {base_url} was not ready within {timeout:.0f}s")


def start_receiver(
    env: dict[str, str], port: int, extra: list[str] | None = None, log=subprocess.DEVNULL
) -> subprocess.Popen:
    """`serve` in its own process group, so a test can kill the master and its workers at once."""
    return subprocess.Popen(
        [sys.executable, "-m", "loader.cli", "serve", "--port", str(port), *(extra or [])],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (gunicorn finishes requests in flight and seals the spool), then wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _prepare(data_dir: Path) -> None:
    if data_dir.exists():
        if not (data_dir / _MARKER).exists() and any(data_dir.iterdir()):
            raise ConfigError(
                f"{data_dir} exists and is not a demo folder; choose another --data-dir"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / _MARKER).write_text("made by flagsmith-warehouse demo; wiped by the next one\n")


def run_demo(data_dir: Path, *, deliveries: int = 400, identities: int = 40) -> int:
    from .simulate import generate, post_all

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
    settings = Settings.from_env(env)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    print(f"1/4 starting the receiver on {base_url}", flush=True)
    receiver = start_receiver(env, port)
    try:
        wait_ready(base_url, receiver)
        batch = generate(deliveries, seed=7, n_identities=identities, secret=secret.encode())
        print(f"2/4 posting {len(batch)} signed identity webhooks over HTTP", flush=True)
        answers = post_all(base_url, batch, concurrency=8)
    finally:
        stop(receiver)
    statuses = Counter(status for status, _ in answers)
    print(f"    answers: {dict(sorted(statuses.items()))}", flush=True)
    print("3/4 loading the spool into flagsmith_raw with dlt", flush=True)
    summary = load(settings)
    print(f"    {summary.line()}", flush=True)
    print("4/4 building the marts with dbt", flush=True)
    status = run_dbt(settings, "build", [*SCHEDULED_BUILD, "--quiet"])
    if status != 0:
        print(f"dbt build failed with exit code {status}", file=sys.stderr)
        return status
    print_report(settings.duckdb_path)
    query = "select * from flagsmith.flagsmith__first_exposures limit 10"
    print(
        f"\nThe warehouse is {settings.duckdb_path}. Look around with, for example:\n"
        f"  .venv/bin/python -c \"import duckdb; duckdb.connect('{settings.duckdb_path}',"
        f" read_only=True).sql('{query}').show()\""
    )
    return 0 if statuses.get(202, 0) == len(batch) else 1


REPORT_SQL = """
with evaluations as (
    select * from flagsmith.flagsmith__flag_evaluations
),
periods as (
    select * from flagsmith.flagsmith__flag_exposure_periods
),
by_variant as (
    select
        feature_name,
        variant,
        count(distinct identity) as identities,
        count(*) as evaluations
    from evaluations
    group by all
),
current_by_variant as (
    select feature_name, variant, count(*) as identities_now
    from periods
    where is_current
    group by all
)
select
    by_variant.feature_name as feature,
    by_variant.variant,
    by_variant.identities,
    by_variant.evaluations,
    coalesce(current_by_variant.identities_now, 0) as identities_now
from by_variant
left join current_by_variant using (feature_name, variant)
order by feature, identities desc, variant
"""


def print_report(duckdb_path: Path) -> None:
    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True) as connection:
        counts = {
            name: connection.execute(f"select count(*) from flagsmith.{name}").fetchone()[0]
            for name in (
                "flagsmith__identities",
                "flagsmith__flag_evaluations",
                "flagsmith__flag_exposure_periods",
                "flagsmith__first_exposures",
            )
        }
        rows = connection.execute(REPORT_SQL).fetchall()
        switched = connection.execute(
            "select count(*) from flagsmith.flagsmith__first_exposures where is_multi_variant"
        ).fetchone()[0]
        experiments = connection.execute(EXPERIMENTS_SQL).fetchall()
    print("\nRows: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    print(f"Identity-feature pairs that saw more than one variant: {switched}\n")
    print_table(("feature", "variant", "identities", "evaluations", "identities_now"), rows)
    print("\nExperiments (flagsmith__experiments, arms from flagsmith__experiment_exposures):")
    print_table(
        (
            "environment",
            "experiment",
            "identities by first arm",
            "multi-arm",
            "SRM p-value",
        ),
        experiments,
    )


EXPERIMENTS_SQL = """
with arms as (
    select environment_id, feature_id, first_arm, count(*) as identities
    from flagsmith.flagsmith__experiment_exposures
    group by all
)
select
    experiments.environment_id,
    experiments.feature_name,
    string_agg(arms.first_arm || ' ' || arms.identities, ', ' order by arms.first_arm),
    experiments.multi_arm_identities,
    coalesce(printf('%.3g', experiments.srm_p_value), 'n/a (too few, or no split reported)')
from flagsmith.flagsmith__experiments as experiments
inner join arms using (environment_id, feature_id)
group by all
order by experiments.environment_id, experiments.feature_name
"""


def print_table(headers: tuple[str, ...], rows: list[tuple]) -> None:
    table = [headers, *[tuple("" if v is None else str(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
