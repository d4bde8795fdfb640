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

import pytest


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
