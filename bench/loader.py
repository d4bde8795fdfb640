"""Loader throughput and memory against DuckDB's own JSON reader, measured in the same run.

    .venv/bin/python bench/loader.py [--deliveries 20000] [--flags 50] [--repeat 3]
        [--scale 200000]

For N deliveries of F flags (~16 KB each at 50 flags) written to a spool as the receiver writes
them, it times `flagsmith-warehouse load` (a fresh process: the spool drained into a fresh DuckDB
file through dlt) and, on the same bodies, DuckDB alone: `read_json_objects` of an NDJSON file
into a table with a JSON column (the landing floor), and the same into row groups as small as the
loader's (DuckDB's own speed with the loader's storage setting: a second, stricter floor).
Reports medians, the ratio to the first (target <= 1.5) and to the second, and the loader's
peak RSS (target < 1 GB). With --scale M it also loads M deliveries once, to show
that time grows linearly and peak memory does not grow with the backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.process import timed_rss  # noqa: E402
from loader.duckdb_destination import ROW_GROUP_SIZE  # noqa: E402
from loader.simulate import iter_deliveries  # noqa: E402
from loader.spool import Delivery, SpoolWriter, new_delivery_id  # noqa: E402


def write_spool(directory: Path, deliveries: int, flags: int) -> tuple[int, Path]:
    """The spool as the receiver leaves it, and the same bodies as NDJSON for DuckDB."""
    spool = directory / "spool"
    directory.mkdir(parents=True, exist_ok=True)
    ndjson = directory / "bodies.ndjson"
    writer = SpoolWriter(spool, segment_seconds=3600)
    total = 0
    with ndjson.open("wb") as lines:
        for item in iter_deliveries(deliveries, seed=3, n_flags=flags, n_identities=2000):
            writer.append(
                Delivery(new_delivery_id(item.at), item.at, item.body, item.environment_key)
            )
            lines.write(item.body + b"\n")
            total += len(item.body)
    writer.close()
    return total, ndjson


def run_loader(work: Path, spool_copy: Path) -> dict:
    spool = work / "spool"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(spool_copy, spool)
    env = dict(
        os.environ,
        FLAGSMITH_SPOOL_DIR=str(spool),
        FLAGSMITH_DUCKDB_PATH=str(work / "warehouse.duckdb"),
        FLAGSMITH_STATE_DIR=str(work / "state"),
    )
    seconds, rss, stderr = timed_rss([sys.executable, "-m", "loader.cli", "load"], env)
    return {"seconds": seconds, "peak_rss_mb": rss, "summary": stderr.strip().splitlines()[-2]}


DUCKDB_CHILD = """
import duckdb, sys, time
if sys.argv[3] == "default":
    connection = duckdb.connect(sys.argv[1])
else:  # the file attached with the loader's row group size, as the loader attaches it
    connection = duckdb.connect()
    connection.execute(f"attach '{sys.argv[1]}' as floor (row_group_size {sys.argv[3]})")
    connection.execute("use floor")
connection.execute("set threads = 2")
started = time.perf_counter()
connection.execute(
    "create table landed as select json as payload"
    " from read_json_objects(?, format='newline_delimited')",
    [sys.argv[2]],
)
landed = connection.execute("select count(*) from landed").fetchone()[0]
print(time.perf_counter() - started, landed)
"""


def run_duckdb(work: Path, ndjson: Path, row_group_size: str = "default") -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seconds, rss, _ = timed_rss(
        [
            sys.executable,
            "-c",
            DUCKDB_CHILD,
            str(work / "floor.duckdb"),
            str(ndjson),
            row_group_size,
        ],
        dict(os.environ),
    )
    return {"seconds": seconds, "peak_rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--flags", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=0, help="also load this many, once")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        size, ndjson = write_spool(root / "data", args.deliveries, args.flags)
        print(
            f"{args.deliveries} deliveries, {size / args.deliveries / 1024:.1f} KB each", flush=True
        )
        rounds = []
        for number in range(args.repeat):
            floor = run_duckdb(root / "floor", ndjson)
            small = run_duckdb(root / "floor", ndjson, str(ROW_GROUP_SIZE))
            load = run_loader(root / "load", root / "data" / "spool")
            rounds.append({"duckdb": floor, "duckdb_small_row_groups": small, "loader": load})
            print(
                f"round {number + 1}: duckdb {floor['seconds']:.2f}s "
                f"(row groups of {ROW_GROUP_SIZE}: {small['seconds']:.2f}s) | "
                f"loader {load['seconds']:.2f}s {load['peak_rss_mb']:.0f} MB | {load['summary']}",
                flush=True,
            )
        loader_s = statistics.median(r["loader"]["seconds"] for r in rounds)
        duckdb_s = statistics.median(r["duckdb"]["seconds"] for r in rounds)
        ratio = statistics.median(r["loader"]["seconds"] / r["duckdb"]["seconds"] for r in rounds)
        rss = statistics.median(r["loader"]["peak_rss_mb"] for r in rounds)
        small_s = statistics.median(r["duckdb_small_row_groups"]["seconds"] for r in rounds)
        small_ratio = statistics.median(
            r["loader"]["seconds"] / r["duckdb_small_row_groups"]["seconds"] for r in rounds
        )
        result = {
            "deliveries": args.deliveries,
            "bytes": size,
            "duckdb_seconds_median": duckdb_s,
            "loader_seconds_median": loader_s,
            "ratio_median": ratio,
            "duckdb_small_row_groups_seconds_median": small_s,
            "ratio_to_small_row_groups_median": small_ratio,
            "loader_peak_rss_mb_median": rss,
            "rounds": rounds,
        }
        print(
            f"\nDuckDB read_json_objects {duckdb_s:.2f}s ({args.deliveries / duckdb_s:.0f}/s), "
            f"loader {loader_s:.2f}s ({args.deliveries / loader_s:.0f}/s), "
            f"ratio {ratio:.2f} (target <= 1.5: {'PASS' if ratio <= 1.5 else 'MISS'}), "
            f"loader peak {rss:.0f} MB (target < 1024: {'PASS' if rss < 1024 else 'MISS'})\n"
            f"DuckDB alone into row groups of {ROW_GROUP_SIZE} rows, as the loader attaches its "
            f"file: {small_s:.2f}s, loader/that {small_ratio:.2f}"
        )
        if args.scale:
            shutil.rmtree(root / "data")
            write_spool(root / "data", args.scale, args.flags)
            (root / "data" / "bodies.ndjson").unlink()
            big = run_loader(root / "load", root / "data" / "spool")
            per_delivery = big["seconds"] / args.scale / (loader_s / args.deliveries)
            result["scale"] = {
                "deliveries": args.scale,
                **big,
                "time_per_delivery_vs_small": per_delivery,
            }
            print(
                f"{args.scale} deliveries: loader {big['seconds']:.1f}s "
                f"({args.scale / big['seconds']:.0f}/s, {per_delivery:.2f}x the time per delivery "
                f"of the small run), peak {big['peak_rss_mb']:.0f} MB"
            )
        out = REPO / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "loader.json").write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
