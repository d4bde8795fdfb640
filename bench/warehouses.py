"""The loader and the dbt builds on Postgres and Spark beside DuckDB, for the same deliveries.

    .venv/bin/python bench/warehouses.py [--deliveries 10000] [--more 500] [--flags 50]
        [--repeat 3] [--warehouses duckdb,postgres,spark]

One stream of simulated deliveries (seed 5) is written to two spools as the receiver writes
them: the first N deliveries, and the next `--more`. Each round, for each warehouse (a new
DuckDB file; a new Postgres database on the server the PG* variables name, 127.0.0.1:5432 by
default; a new lake and Spark warehouse folder), it runs the real commands in fresh processes
and times them:

1. `flagsmith-warehouse load` of the N deliveries;
2. `flagsmith-warehouse transform` (a first `dbt build`: every model built in full, every data
   test run);
3. `load` of the `--more` deliveries;
4. `transform` again (the incremental build a scheduler runs);
5. `transform` with nothing new (dbt's fixed start-up and the tests: the floor).

It prints each phase's median wall time per warehouse, its ratio to DuckDB's in the same round,
each warehouse's incremental build as a fraction of its full build, and the build time per
delivery (the full build per delivery of the history, the incremental one per new delivery),
and writes `bench/out/warehouses.json`. Peak RSS is of the `flagsmith-warehouse` process only:
the Postgres server's and Spark's JVM memory (a child of dbt) are not in it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.process import timed_rss  # noqa: E402
from loader.simulate import iter_deliveries  # noqa: E402
from loader.spool import Delivery, SpoolWriter, new_delivery_id  # noqa: E402

PHASES = ("load", "full_build", "load_more", "incremental_build", "no_op_build")


def write_spools(directory: Path, deliveries: int, more: int, flags: int) -> None:
    base = SpoolWriter(directory / "base", segment_seconds=3600)
    extra = SpoolWriter(directory / "more", segment_seconds=3600)
    stream = iter_deliveries(
        deliveries + more, seed=5, n_flags=flags, n_identities=max(deliveries // 10, 10)
    )
    for number, item in enumerate(stream):
        writer = base if number < deliveries else extra
        writer.append(Delivery(new_delivery_id(item.at), item.at, item.body, item.environment_key))
    base.close()
    extra.close()


def postgres_admin(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD"),
        dbname=os.environ.get("PGDATABASE", "postgres"),
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def run_round(root: Path, spools: Path, warehouse: str) -> dict[str, dict[str, float]]:
    work = root / warehouse
    shutil.rmtree(work, ignore_errors=True)
    env = dict(
        os.environ,
        FLAGSMITH_WAREHOUSE=warehouse,
        FLAGSMITH_SPOOL_DIR=str(work / "spool"),
        FLAGSMITH_STATE_DIR=str(work / "state"),
        FLAGSMITH_DUCKDB_PATH=str(work / "warehouse.duckdb"),
        FLAGSMITH_LAKE_DIR=str(work / "lake"),
        FLAGSMITH_SPARK_WAREHOUSE_DIR=str(work / "spark-warehouse"),
    )
    database = None
    if warehouse == "postgres":
        database = f"bench_{secrets.token_hex(4)}"
        postgres_admin(f"create database {database}")
        env.update(PGHOST=os.environ.get("PGHOST", "127.0.0.1"), PGDATABASE=database)
        env.setdefault("PGUSER", "postgres")
        env.setdefault("PGPORT", "5432")
    command = [sys.executable, "-m", "loader.cli"]
    phases: dict[str, dict[str, float]] = {}

    def phase(name: str, *arguments: str) -> None:
        seconds, rss, _ = timed_rss([*command, *arguments], env)
        phases[name] = {"seconds": seconds, "peak_rss_mb": rss}

    try:
        shutil.copytree(spools / "base", work / "spool")
        phase("load", "load")
        phase("full_build", "transform")
        shutil.rmtree(work / "spool")
        shutil.copytree(spools / "more", work / "spool")
        phase("load_more", "load")
        phase("incremental_build", "transform")
        phase("no_op_build", "transform")
    finally:
        if database is not None:
            postgres_admin(f"drop database if exists {database} with (force)")
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--more", type=int, default=500)
    parser.add_argument("--flags", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warehouses", default="duckdb,postgres")
    args = parser.parse_args()
    warehouses = args.warehouses.split(",")
    if warehouses[0] != "duckdb":
        parser.error("--warehouses starts with duckdb: the ratios are to it")
    root = Path(tempfile.mkdtemp(prefix="bench-warehouses-"))
    try:
        write_spools(root / "spools", args.deliveries, args.more, args.flags)
        print(
            f"{args.deliveries} deliveries of {args.flags} flags, then {args.more} more",
            flush=True,
        )
        rounds = []
        for number in range(args.repeat):
            result = {w: run_round(root, root / "spools", w) for w in warehouses}
            rounds.append(result)
            print(
                f"round {number + 1}: "
                + " | ".join(
                    f"{w} " + " ".join(f"{p} {result[w][p]['seconds']:.1f}s" for p in PHASES)
                    for w in result
                ),
                flush=True,
            )
        summary: dict[str, dict[str, float]] = {}
        others = warehouses[1:]
        print(
            f"\n{'phase':<18} "
            + " ".join(f"{w:>9}" for w in warehouses)
            + " ".join(f" {w + '/duckdb':>15}" for w in others)
        )
        for p in PHASES:
            medians = {w: statistics.median(r[w][p]["seconds"] for r in rounds) for w in warehouses}
            ratios = {
                f"{w}_over_duckdb": statistics.median(
                    r[w][p]["seconds"] / r["duckdb"][p]["seconds"] for r in rounds
                )
                for w in others
            }
            summary[p] = {**medians, **ratios}
            print(
                f"{p:<18} "
                + " ".join(f"{medians[w]:>8.2f}s" for w in warehouses)
                + " ".join(f" {ratios[w + '_over_duckdb']:>14.2f}x" for w in others)
            )
        for w in warehouses:
            fraction = statistics.median(
                r[w]["incremental_build"]["seconds"] / r[w]["full_build"]["seconds"] for r in rounds
            )
            rss = statistics.median(r[w]["load"]["peak_rss_mb"] for r in rounds)
            full_ms = 1000 * summary["full_build"][w] / args.deliveries
            incremental_ms = 1000 * summary["incremental_build"][w] / args.more
            summary[w] = {
                "incremental_over_full": fraction,
                "load_peak_rss_mb": rss,
                "full_build_ms_per_delivery": full_ms,
                "incremental_build_ms_per_new_delivery": incremental_ms,
            }
            print(
                f"{w}: incremental build {fraction:.0%} of the full build; "
                f"{full_ms:.1f} ms per delivery in full, {incremental_ms:.1f} ms per new one; "
                f"loader peak {rss:.0f} MB; "
                f"{args.deliveries / summary['load'][w]:.0f} deliveries/s loaded"
            )
        out = REPO / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "warehouses.json").write_text(
            json.dumps({"arguments": vars(args), "summary": summary, "rounds": rounds}, indent=2)
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
