"""Spark for the tests: a local in-process session, required when FLAGSMITH_TEST_SPARK=1.

With FLAGSMITH_TEST_SPARK=1 (as `.ci/run` sets) a test that needs Spark fails when Spark cannot
start (pyspark not installed: `make install EXTRAS=dev,postgres,spark`; no Java 17); without it
such tests are skipped, with the reason. One session serves the whole test run: the JVM takes
several seconds to start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .marts import every_row, mart_columns


def required() -> bool:
    return os.environ.get("FLAGSMITH_TEST_SPARK", "").strip().lower() in ("1", "true", "yes")


def _unavailable(message: str) -> None:
    if required():
        pytest.fail(f"FLAGSMITH_TEST_SPARK=1 but {message}", pytrace=False)
    pytest.skip(f"{message} (set FLAGSMITH_TEST_SPARK=1 to require Spark)")


@pytest.fixture(scope="session")
def spark(tmp_path_factory) -> Iterator[object]:
    """A `local[2]` SparkSession in UTC with its SQL warehouse and metastore in a temporary
    folder, stopped at the end of the run."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        _unavailable(f"pyspark is not installed ({error}): make install EXTRAS=dev,postgres,spark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _unavailable("no Java found (apt-get install openjdk-17-jre-headless)")
    where = tmp_path_factory.mktemp("spark")
    try:
        session = (
            SparkSession.builder.master("local[2]")
            .appName("flagsmith-warehouse-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.warehouse.dir", str(where / "spark-warehouse"))
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={where}")
            .getOrCreate()
        )
        session.sql("select 1").collect()
    except Exception as error:  # the JVM did not start, or died
        _unavailable(f"Spark could not start: {str(error).strip().splitlines()[0][:500]}")
    try:
        yield session
    finally:
        session.stop()


SPARK_BUILD = ("--exclude-resource-type", "unit_test")
"""What a Spark `dbt build` in the tests leaves out, as a scheduled `transform` does: the unit
tests, whose fixtures are written in DuckDB's and Postgres's types."""


_DUMP = """
import sys
from pyspark.sql import SparkSession

warehouse, out, schema, *names = sys.argv[1:]
session = (
    SparkSession.builder.master("local[2]")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.sql.warehouse.dir", warehouse)
    .config(
        "spark.hadoop.javax.jdo.option.ConnectionURL",
        f"jdbc:derby:;databaseName={warehouse}/metastore_db;create=true",
    )
    .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={warehouse}")
    .enableHiveSupport()
    .getOrCreate()
)
for name in names:
    table = session.table(f"{schema}.{name}")
    kept = [f.name for f in table.schema.fields if f.dataType.typeName() != "variant"]
    table.select(*kept).write.mode("overwrite").parquet(f"{out}/{name}")
session.stop()
"""


def spark_tables(settings, names, out_dir, schema: str = "flagsmith"):
    """An in-memory DuckDB connection (UTC) with a view `<schema>.<name>` per Spark table or
    view `names` of the warehouse `settings` built, read out by a Spark process of its own
    (Spark's metastore admits one process at a time; dbt's has ended). Variant columns (the
    staged payload) are left out: DuckDB cannot read them."""
    import subprocess
    import sys

    import duckdb

    subprocess.run(
        [
            sys.executable,
            "-c",
            _DUMP,
            str(Path(settings.spark_warehouse_dir).resolve()),
            str(out_dir),
            schema,
            *names,
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    connection = duckdb.connect()
    connection.execute("set TimeZone = 'UTC'")
    connection.execute(f"create schema {schema}")
    for name in names:
        files = f"{out_dir}/{name}/*.parquet"
        connection.execute(f"create view {schema}.{name} as select * from read_parquet('{files}')")
    return connection


def spark_columns(connection, name: str) -> list[str]:
    """A Spark mart's columns but the partition column, which only Spark's tables have."""
    return [column for column in mart_columns(connection, name) if column != "flagsmith_partition"]


def spark_rows(connection, name: str) -> list[tuple]:
    """Every row of a Spark mart (tests/marts.py, every_row) without the partition column."""
    columns = mart_columns(connection, name)
    rows = every_row(connection, name)
    if "flagsmith_partition" not in columns:
        return rows
    position = columns.index("flagsmith_partition")
    return [row[:position] + row[position + 1 :] for row in rows]
