"""The project installs as a dbt package in someone else's project and builds there."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import yaml

from loader.transform import dbt_executable

from .bodies import body, flag
from .oracle import COLUMNS
from .warehouse import Posted, land, warehouse_settings

REPO = Path(__file__).resolve().parent.parent
CONSUMER = Path(__file__).resolve().parent / "dbt_consumer"


def _dbt(project: Path, duckdb_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(project),
            "CONSUMER_DUCKDB_PATH": str(duckdb_path),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_installs_as_a_package_and_builds_with_the_raw_data_elsewhere(tmp_path):
    settings = warehouse_settings(tmp_path / "landing")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    variants = ["control", "variant_b", "control"]
    land(
        settings,
        [
            Posted(
                body(
                    f"user_{n}",
                    [flag(1, "checkout_button", value=v, kind="MULTIVARIATE")],
                    traits=[{"trait_key": "plan", "trait_value": "pro", "transient": False}],
                ),
                start + timedelta(minutes=n),
            )
            for n, v in enumerate(variants)
        ],
    )
    with duckdb.connect(str(settings.duckdb_path)) as connection:
        connection.execute("create schema landing")
        connection.execute(
            "create table landing.flagsmith_webhooks as"
            " select * from flagsmith_raw.identity_webhooks"
        )
        connection.execute("drop table flagsmith_raw.identity_webhooks")
        # dlt's record of completed loads lives beside the raw table in the dataset
        connection.execute(
            "create table landing._dlt_loads as select * from flagsmith_raw._dlt_loads"
        )

    project = tmp_path / "consumer"
    shutil.copytree(CONSUMER, project)
    (project / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(REPO)}]}))
    deps = _dbt(project, settings.duckdb_path, "deps")
    assert deps.returncode == 0, deps.stdout[-3000:]
    for attempt in ("first", "incremental"):
        build = _dbt(project, settings.duckdb_path, "build")
        assert build.returncode == 0, f"{attempt}: " + build.stdout[-4000:]

    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        arms = connection.execute(
            "select first_arm, users from analytics.checkout_arms order by 1"
        ).fetchall()
        # user_0 and user_2 are one customer; both control
        assert arms == [("control", 1), ("variant_b", 1)]
        assert connection.execute(
            "select identity, user_id, plan_at_exposure"
            " from analytics_flagsmith.flagsmith__experiment_exposures order by 1"
        ).fetchall() == [
            ("user_0", "customer_100", "pro"),
            ("user_1", "customer_101", "pro"),
            ("user_2", "customer_100", "pro"),
        ]
        marts = connection.execute(
            "select count(*) from information_schema.tables"
            " where table_schema = 'analytics_flagsmith' and table_name like 'flagsmith\\_\\_%'"
            " escape '\\'"
        ).fetchone()[0]
        assert marts == len(COLUMNS) + 1  # every contract mart and the watermarks table
