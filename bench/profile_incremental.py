"""EXPLAIN ANALYZE of the incremental marts' compiled SQL after one more increment.

    .venv/bin/python bench/profile_incremental.py [--size 100000] [--models m1 m2 ...]

Run after bench/marts.py (it uses bench/out/work/after-incremental-<size>.duckdb and the frozen
project in bench/out/project). Appends the next 1,000 deliveries of the cached stream, runs the
staging model and flagsmith__flag_evaluations so the new batch is in place, compiles the chosen
incremental marts (their watermark literals are read from the warehouse), and profiles each
compiled select with DuckDB's EXPLAIN ANALYZE. Prints the operators that dominate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import marts as bench

DEFAULT_MODELS = [
    "flagsmith__flag_exposure_periods",
    "flagsmith__first_exposures",
    "flagsmith__daily_feature_exposures",
]


def walk(node, depth=0, out=None):
    """(seconds, depth, name, rows out, extra_info) per operator; DuckDB 1.x and 2.x layouts."""
    out = [] if out is None else out
    if "operator" in node:  # DuckDB 2.x: sections at the top level
        for child in node["operator"]:
            walk(child, depth, out)
        return out
    name = node.get("operator_name") or node.get("name") or node.get("type", "?")
    out.append(
        (
            node.get("operator_timing", node.get("timing", 0.0)),
            depth,
            name.strip(),
            node.get("operator_cardinality", node.get("intermediate_rows")),
            (node.get("extra_info") or {}),
        )
    )
    for child in node.get("children", []):
        walk(child, depth + 1, out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    import duckdb

    streams = sorted(bench.DATA.glob("stream-*.duckdb"), key=lambda p: p.stat().st_size)
    stream = streams[-1]
    bench.place(bench.WORK / f"after-incremental-{args.size}.duckdb")
    con = duckdb.connect(str(bench.WAREHOUSE))
    have = con.execute("select count(*) from flagsmith_raw.identity_webhooks").fetchone()[0]
    con.close()
    bench.append_increment(stream, have, 1000, load_number=99)
    r = bench.dbt(
        ["run", "--select", "stg_flagsmith__identity_webhooks", "flagsmith__flag_evaluations"]
    )
    print(f"staged the increment: {r['seconds']:.1f}s", file=sys.stderr)
    bench.dbt(["compile", "--select", *args.models])
    con = duckdb.connect(str(bench.WAREHOUSE))
    touched = con.execute("""
        with w as (select max(transform_batch_at) b from flagsmith.flagsmith__flag_evaluations),
        t as (select distinct environment_id, identity from flagsmith.flagsmith__flag_evaluations
              where transform_batch_at = (select b from w))
        select (select count(*) from t),
               (select count(distinct (environment_id, identity))
                from flagsmith.flagsmith__flag_evaluations),
               count(*) filter (where (e.environment_id, e.identity) in (select * from t)),
               count(*)
        from flagsmith.flagsmith__flag_evaluations e
    """).fetchone()
    print(
        f"identities touched by the increment: {touched[0]} of {touched[1]}; their evaluations:"
        f" {touched[2]} of {touched[3]} ({touched[2] / touched[3]:.1%}) -- the rows an"
        f" identity-partitioned recompute must read"
    )
    compiled = bench.TARGET / "compiled" / "flagsmith_warehouse" / "models" / "marts"
    for model in args.models:
        sql = (compiled / f"{model}.sql").read_text()
        con.execute("pragma enable_profiling = 'json'")
        out = bench.WORK / f"profile-{model}.json"
        con.execute(f"pragma profiling_output = '{out}'")
        started = time.perf_counter()
        con.execute(f"create or replace temp table t as {sql}")
        seconds = time.perf_counter() - started
        con.execute("pragma disable_profiling")
        rows = con.execute("select count(*) from t").fetchone()[0]
        profile = json.loads(out.read_text())
        ops = walk(profile)
        system = profile.get("system", {})
        cpu = profile.get("query", {}).get("cpu_time", 0)
        print(
            f"\n== {model}: {seconds:.2f}s wall, cpu {cpu:.2f}s,"
            f" peak buffer {system.get('peak_buffer_memory', 0) / 2**20:.0f} MB, {rows} rows"
        )
        for timing, depth, name, card, extra in sorted(ops, key=lambda o: -o[0])[: args.top]:
            detail = {
                k: v
                for k, v in extra.items()
                if k
                in (
                    "Table",
                    "CTE Name",
                    "Filters",
                    "Partitions",
                    "Join Type",
                    "Conditions",
                    "Aggregates",
                    "Estimated Cardinality",
                )
            }
            text = json.dumps(detail)[:200]
            print(f"  {timing:6.2f}s  d{depth:<2} {name:<20} rows={card} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
