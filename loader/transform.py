"""Running dbt against the project's own profiles.yml.

dbt runs as a subprocess of the same virtualenv: each invocation starts clean (dbt keeps global
state in-process), and `run --every` can repeat it for days without growing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from .config import Settings, project_dir
from .status import recorded_step
from .warehouses import for_settings


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["FLAGSMITH_WAREHOUSE"] = settings.warehouse
    env["FLAGSMITH_DUCKDB_PATH"] = str(settings.duckdb_path)
    env["FLAGSMITH_LAKE_DIR"] = settings.lake_dir
    env["FLAGSMITH_SPARK_WAREHOUSE_DIR"] = str(settings.spark_warehouse_dir)
    env["FLAGSMITH_DBT_SCHEMA"] = settings.marts_schema  # profiles.yml's schema
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


def target_path(settings: Settings) -> Path:
    return settings.dbt_target_path or settings.state_dir / "dbt" / "target"


def dbt_command(
    settings: Settings, command: str | Sequence[str], extra: Sequence[str] = ()
) -> list[str]:
    """`dbt <command...> --project-dir ... <extra...>`; command may be ["docs", "generate"]."""
    root = project_dir()
    target = target_path(settings)
    log_path = target.parent / "logs"
    return [
        dbt_executable(),
        *([command] if isinstance(command, str) else command),
        "--project-dir",
        str(root),
        "--profiles-dir",
        str(root),
        "--target",
        settings.warehouse,
        "--target-path",
        str(target),
        "--log-path",
        str(log_path),
        *extra,
    ]


# What a scheduled `transform` runs: models and data tests. dbt's unit tests check the SQL's
# logic, not the data; they run in CI (`make test`), not on every scheduled build.
SCHEDULED_BUILD = ("--exclude-resource-type", "unit_test")


def run_dbt(
    settings: Settings,
    command: str | Sequence[str] = "build",
    extra: Sequence[str] = (),
    *,
    lock: bool = True,
) -> int:
    """Run `dbt <command>`; returns dbt's exit code.

    On a DuckDB file it waits for the loader (one writer per file). On Postgres the loaders of
    every node keep loading while it runs (staging picks up whole committed loads only), but
    two dbt runs on one schema at once would both append the same loads: each waits for the
    other through an advisory lock in the database. `lock=False`: the caller holds that lock.
    """
    args = dbt_command(settings, command, extra)
    env = dbt_environment(settings)
    held: AbstractContextManager[object] = (
        for_settings(settings).transform_lock(settings.marts_schema) if lock else nullcontext()
    )
    results = target_path(settings) / "run_results.json"
    building = command in ("build", "run")
    recording: AbstractContextManager[dict[str, Any]] = nullcontext({})
    if building:
        recording = recorded_step(settings, "transform")
    with held, recording as record:
        if settings.warehouse == "spark":
            _prepare_lake(settings)
        results.unlink(missing_ok=True)
        status = subprocess.call(args, env=env)
        if building:
            record.update(_recorded_outcome(settings, status, results))
    for line in warnings(results):
        print(line, file=sys.stderr)
    return status


def _prepare_lake(settings: Settings) -> None:
    """Before Spark reads the lake (under the transform lock): the erasures table exists, and no
    older revision of a raw file that a killed `forget` rewrote is left for staging's glob."""
    from . import lake
    from .warehouses import DATASET, RAW_TABLES

    lake.ensure_erasures(settings.lake_dir, DATASET)
    lake.finish_rewrites(settings.lake_dir, DATASET, RAW_TABLES)


def _recorded_outcome(settings: Settings, status: int, results: Path) -> dict[str, object]:
    """What `status` shows of this transform: dbt's exit code and counts, and the newest delivery
    in the raw tables and the marts, read while the warehouse is still this process's."""
    from .status import WarehouseUnavailable, warehouse_figures

    outcome: dict[str, object] = {
        "result": "success" if status == 0 else f"failed (dbt exit code {status})",
        "dbt_exit_code": status,
    }
    try:
        counts: dict[str, int] = {}
        for result in json.loads(results.read_text())["results"]:
            counts[result.get("status", "unknown")] = counts.get(result.get("status"), 0) + 1
        outcome["dbt_results"] = counts
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        figures = warehouse_figures(settings, take_lock=False)
    except WarehouseUnavailable as unavailable:
        outcome["figures_error"] = str(unavailable)
    else:
        for name in ("raw_newest_received_at", "marts_newest_received_at"):
            value = getattr(figures, name)
            outcome[name] = None if value is None else value.isoformat()
    return outcome


def warnings(run_results: Path) -> list[str]:
    """One line per data test that warned in a dbt run (the experiment-health checks are warn
    tests), so a person running `transform` sees them even when dbt's own log is quiet or long."""
    if not run_results.exists():
        return []
    try:
        results = json.loads(run_results.read_text())["results"]
    except (ValueError, KeyError):
        return []
    lines = []
    for result in results:
        if result.get("status") != "warn":
            continue
        name = result["unique_id"].split(".")[2]
        lines.append(f"warning: dbt data test {name} found {result.get('failures')} row(s)")
    return lines
