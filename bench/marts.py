"""Benchmark: the dbt marts on DuckDB, full build and incremental, against DuckDB's own floor.

    .venv/bin/python bench/marts.py [--deliveries 100000] [--corpus production] [--repeat 3]

What it measures:
- baseline: DuckDB alone parsing every payload once with ``from_json(payload, <the project's struct
  schema>)`` and unnesting flags, traits and segments into three tables (CREATE TABLE AS);
- every ``dbt build`` is the one ``flagsmith-warehouse transform`` runs (models and data tests;
  dbt's unit tests belong to CI, not to a scheduled build);
- full: ``dbt build --full-refresh`` (models and tests) and ``dbt run --full-refresh`` (models
  only); target: full build <= 2.5x the baseline, and the time of every model;
- noop: ``dbt build`` with no new raw rows after an incremental run, the floor (start-up plus
  the fixed cost of every node); start-up: ``dbt build`` selecting no node;
- incremental: ``dbt build`` after 1,000 more deliveries of the same stream in a new dlt load;
  it should barely move when the history doubles (the same stream run twice as long: base 2N).

The corpus (``--corpus``) is ``production`` or ``worst`` from bench/corpus.py, or
``loader.simulate``'s stream (``simulated``); bench/README.md describes them. Each figure is the
median of ``--repeat`` runs (min and max shown). The raw table is written with the loader's exact
columns (no HTTP, no dlt: those have their own benchmarks) and cached under bench/out/data. Every
dbt and baseline process runs under ``/usr/bin/time -v`` for its peak RSS. Results go to
bench/out/marts-*.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # bench/corpus.py; after ROOT: bench/loader.py is no package

# What `flagsmith-warehouse transform` runs on a schedule: models and data tests, no unit tests.
from loader.transform import SCHEDULED_BUILD  # noqa: E402

OUT = ROOT / "bench" / "out"
DATA = OUT / "data"
WORK = OUT / "work"
WAREHOUSE = WORK / "warehouse.duckdb"  # one fixed path, so dbt's partial parse stays valid
TARGET = WORK / "target"
LOGS = WORK / "logs"
PROJECT = OUT / "project"  # a frozen copy of the dbt project: others edit models meanwhile
PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests/dbt")
CHUNK = 10_000  # deliveries per dlt load id in the base data, like real loader batches
LOAD_ID_EPOCH = 1_772_400_000  # 2026-03-01: dlt load ids are unix-time strings

RAW_DDL = """
create schema if not exists flagsmith_raw;
create table if not exists flagsmith_raw.identity_webhooks (
    delivery_id varchar not null,
    received_at timestamp with time zone not null,
    environment_key varchar,
    signature_status varchar not null,
    body_sha256 varchar not null,
    payload json not null,
    _dlt_load_id varchar not null,
    _dlt_id varchar not null
);
"""
RECORD_LOADS = """
create table if not exists flagsmith_raw._dlt_loads (
    load_id varchar not null,
    schema_name varchar,
    status bigint not null,
    inserted_at timestamp with time zone not null,
    schema_version_hash varchar
);
insert into flagsmith_raw._dlt_loads
select distinct _dlt_load_id, 'flagsmith', 0, now(), null
from flagsmith_raw.identity_webhooks
where _dlt_load_id not in (select load_id from flagsmith_raw._dlt_loads);
"""
"""dlt records each completed load in `_dlt_loads`; staging only takes recorded loads."""

RAW_COLUMNS = (
    "delivery_id, received_at, environment_key, signature_status, body_sha256, payload,"
    " _dlt_load_id, _dlt_id"
)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- data ---------------------------------------------------------------------------------------


def stream_key(args: argparse.Namespace) -> str:
    if args.corpus != "simulated":
        return f"{args.corpus}-i{args.identities}-s{args.seed}"
    return (
        f"f{args.flags}-i{args.identities}-e{args.environments}-s{args.seed}"
        f"-m{args.mean_interval:g}"
    )


def corpus_stream(args: argparse.Namespace, total: int):
    """The deliveries of the chosen corpus: `simulated` (loader.simulate) or a bench/corpus.py
    shape (`production`, `worst`: 50 flags, `identities` identities, their calls spread over the
    stream)."""
    if args.corpus == "simulated":
        from loader.simulate import iter_deliveries

        return iter_deliveries(
            total,
            seed=args.seed,
            n_identities=args.identities,
            n_flags=args.flags,
            n_environments=args.environments,
            mean_interval=args.mean_interval,
        )
    from itertools import islice

    from corpus import iter_corpus

    per_identity = -(-total // args.identities)
    stream = iter_corpus(
        args.corpus,
        identities=args.identities,
        deliveries_per_identity=per_identity,
        days=14.0 * per_identity / 5,
        seed=args.seed,
    )
    return islice(stream, total)


def _delivery_id(at: datetime, seq: int) -> str:
    """A deterministic UUIDv7 like the receiver's (sorts by receipt ms; seq in the random bits)."""
    ms = int(at.timestamp() * 1000)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | 0b10 << 62 | (seq & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def ensure_stream(args: argparse.Namespace, total: int) -> Path:
    """The simulated stream (first ``total`` deliveries, with ``seq``), generated once."""
    import duckdb
    import pyarrow as pa

    DATA.mkdir(parents=True, exist_ok=True)
    for existing in sorted(DATA.glob(f"stream-{stream_key(args)}-n*.duckdb")):
        n = int(existing.stem.rsplit("-n", 1)[1])
        if n >= total:
            return existing
    path = DATA / f"stream-{stream_key(args)}-n{total}.duckdb"
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    log(f"generating {total} deliveries into {path.name}")
    started = time.perf_counter()
    schema = pa.schema(
        [
            ("seq", pa.int64()),
            ("delivery_id", pa.string()),
            ("received_at", pa.timestamp("us", tz="UTC")),
            ("environment_key", pa.string()),
            ("body_sha256", pa.string()),
            ("payload", pa.string()),
        ]
    )
    con = duckdb.connect(str(tmp))
    con.execute(
        "create table stream (seq bigint, delivery_id varchar, received_at timestamptz,"
        " environment_key varchar, body_sha256 varchar, payload json)"
    )
    columns: dict[str, list] = {name: [] for name in schema.names}

    def flush() -> None:
        batch = pa.Table.from_pydict(columns, schema=schema)  # noqa: F841 (read by duckdb)
        con.execute("insert into stream select * from batch")
        for values in columns.values():
            values.clear()

    for seq, delivery in enumerate(corpus_stream(args, total)):
        columns["seq"].append(seq)
        columns["delivery_id"].append(_delivery_id(delivery.at, seq))
        columns["received_at"].append(delivery.at)
        columns["environment_key"].append(delivery.environment_key)
        columns["body_sha256"].append(hashlib.sha256(delivery.body).hexdigest())
        columns["payload"].append(delivery.body.decode("ascii"))
        if len(columns["seq"]) == CHUNK:
            flush()
    if columns["seq"]:
        flush()
    con.execute("checkpoint")
    con.close()
    tmp.rename(path)
    log(f"generated in {time.perf_counter() - started:.0f}s")
    return path


def _raw_select(first: int, last: int, load_id_sql: str) -> str:
    return f"""
        select
            delivery_id, received_at, environment_key, 'verified', body_sha256, payload,
            {load_id_sql},
            substr(sha256(delivery_id), 1, 14)
        from stream.stream
        where seq >= {first} and seq < {last}
        order by seq
    """


def ensure_base(args: argparse.Namespace, stream: Path, size: int) -> Path:
    """The raw table holding the first ``size`` deliveries, one dlt load id per CHUNK rows."""
    import duckdb

    path = DATA / f"base-{stream_key(args)}-n{size}.duckdb"
    if path.exists():
        return path
    log(f"writing the raw table of {size} deliveries: {path.name}")
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute(RAW_DDL)
    con.execute(f"attach '{stream}' as stream (read_only)")
    load_id = f"cast({LOAD_ID_EPOCH} + seq // {CHUNK} as varchar) || '.000001'"
    con.execute(f"insert into flagsmith_raw.identity_webhooks {_raw_select(0, size, load_id)}")
    con.execute("detach stream")
    con.execute("checkpoint")
    con.close()
    tmp.rename(path)
    return path


def append_increment(stream: Path, first: int, count: int, load_number: int) -> None:
    """The next ``count`` deliveries of the stream as one new dlt load into the work warehouse."""
    import duckdb

    con = duckdb.connect(str(WAREHOUSE))
    con.execute(f"attach '{stream}' as stream (read_only)")
    load_id = f"'{LOAD_ID_EPOCH + 10_000_000 + load_number}.000001'"
    con.execute(
        f"insert into flagsmith_raw.identity_webhooks {_raw_select(first, first + count, load_id)}"
    )
    con.execute(RECORD_LOADS)
    con.close()


def place(source: Path) -> None:
    """Copy a cached database to the fixed work path (not timed)."""
    WORK.mkdir(parents=True, exist_ok=True)
    for leftover in (WAREHOUSE, WAREHOUSE.with_name(WAREHOUSE.name + ".wal")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(source, WAREHOUSE)
    import duckdb

    with duckdb.connect(str(WAREHOUSE)) as con:
        con.execute(RECORD_LOADS)


# --- measured processes -------------------------------------------------------------------------


def timed(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run under /usr/bin/time -v: wall seconds, CPU seconds (user+sys, less sensitive to other
    load on a shared machine than wall time), peak RSS (MB) of the process, exit status."""
    import resource

    stats = WORK / "time-v.txt"
    stats.unlink(missing_ok=True)
    wrapper = ["/usr/bin/time", "-v", "-o", str(stats)] if Path("/usr/bin/time").exists() else []
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(wrapper + argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = None
    if wrapper and stats.exists():
        for line in stats.read_text().splitlines():
            if "Maximum resident set size" in line:
                peak = int(line.rsplit(":", 1)[1]) / 1024
    else:  # fallback: the largest child so far (an upper bound, never reset)
        peak = after.ru_maxrss / 1024
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "loadavg_1m_before": load,
        "returncode": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
    }


def dbt(command: list[str]) -> dict:
    env = dict(os.environ)
    env.update(
        FLAGSMITH_WAREHOUSE="duckdb",
        FLAGSMITH_DUCKDB_PATH=str(WAREHOUSE),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    executable = Path(sys.executable).with_name("dbt")
    argv = [
        str(executable if executable.exists() else "dbt"),
        *command,
        "--project-dir",
        str(PROJECT),
        "--profiles-dir",
        str(PROJECT),
        "--target",
        "duckdb",
        "--target-path",
        str(TARGET),
        "--log-path",
        str(LOGS),
    ]
    result = timed(argv, env)
    result["command"] = "dbt " + " ".join(command)
    result["nodes"] = {}
    run_results = TARGET / "run_results.json"
    if run_results.exists() and run_results.stat().st_mtime >= time.time() - result["seconds"] - 1:
        data = json.loads(run_results.read_text())
        result["dbt_elapsed"] = data.get("elapsed_time")
        for node in data["results"]:
            result["nodes"][node["unique_id"]] = {
                "seconds": node["execution_time"],
                "status": node["status"],
                "message": node.get("message"),
            }
    failed = {
        k: v for k, v in result["nodes"].items() if v["status"] not in ("success", "pass", "warn")
    }
    result["warned"] = sorted(k for k, v in result["nodes"].items() if v["status"] == "warn")
    if result["returncode"] != 0 or failed:
        result["failed"] = failed
        result["output_tail"] = "\n".join(result["stdout"].splitlines()[-25:])
        log(
            f"WARNING: {result['command']} exited {result['returncode']}; "
            f"{len(failed)} failed nodes\n{result['output_tail']}"
        )
    del result["stdout"], result["stderr"]
    return result


BASELINE_SQL = """
set threads = {threads};
create schema bench_baseline;
create table bench_baseline.parsed as
    select delivery_id, received_at, environment_key, {parse} as p
    from flagsmith_raw.identity_webhooks;
create table bench_baseline.flags as
    select delivery_id, received_at, identity, flag.*
    from (select delivery_id, received_at, p.identity, unnest(p.flags) as flag
          from bench_baseline.parsed);
create table bench_baseline.traits as
    select delivery_id, received_at, identity, trait.*
    from (select delivery_id, received_at, p.identity, unnest(p.traits) as trait
          from bench_baseline.parsed);
create table bench_baseline.segments as
    select delivery_id, received_at, identity, segment.*
    from (select delivery_id, received_at, p.identity, unnest(p.segments) as segment
          from bench_baseline.parsed);
"""


def project_parse_expression() -> str:
    """The exact ``from_json`` call the project compiles (macros/json.sql), taken from dbt."""
    compiled = TARGET / "compiled" / "flagsmith_warehouse" / "models" / "staging"
    text = (compiled / "stg_flagsmith__identity_webhooks.sql").read_text()
    start = text.index("from_json(payload, '")
    end = text.index("')", start) + 2
    return text[start:end]


def baseline_child(path: str, parse: str, threads: int) -> None:
    """Runs in its own process (so its peak RSS is its own): the CTAS statements, timed."""
    import duckdb

    con = duckdb.connect(path)
    times = {}
    for statement in BASELINE_SQL.format(parse=parse, threads=threads).split(";"):
        if statement.strip():
            started = time.perf_counter()
            con.execute(statement)
            name = statement.split()[2] if statement.split()[0] == "create" else "setup"
            times[name] = time.perf_counter() - started
    rows = {
        t: con.execute(f"select count(*) from bench_baseline.{t}").fetchone()[0]
        for t in ("flags", "traits", "segments")
    }
    con.close()
    print(json.dumps({"statements": times, "rows": rows}))


def baseline(parse: str, threads: int) -> dict:
    result = timed(
        [
            sys.executable,
            __file__,
            "--baseline-child",
            str(WAREHOUSE),
            "--parse",
            parse,
            "--threads",
            str(threads),
        ]
    )
    if result["returncode"] != 0:
        raise RuntimeError("baseline failed:\n" + result["stderr"][-3000:])
    child = json.loads(result.pop("stdout").strip().splitlines()[-1])
    result.pop("stderr")
    result["statements"] = child["statements"]
    result["rows"] = child["rows"]
    result["query_seconds"] = sum(child["statements"].values())
    return result


# --- summary ------------------------------------------------------------------------------------


def summary(runs: list[dict], key: str = "seconds") -> dict:
    """Median, min, max over runs; a dbt invocation that crashed (exit 2) does not count."""
    values = [r[key] for r in runs if r.get(key) is not None and r.get("returncode") != 2]
    if not values:
        return {}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def slowest(runs: list[dict], top: int = 5) -> list[tuple[str, float]]:
    per_node: dict[str, list[float]] = {}
    for run in runs:
        for node, info in run["nodes"].items():
            per_node.setdefault(node, []).append(info["seconds"])
    medians = {node: statistics.median(v) for node, v in per_node.items()}
    return sorted(medians.items(), key=lambda kv: -kv[1])[:top]


def node_split(runs: list[dict]) -> dict:
    """Median over runs of the summed execution time of model nodes and of test nodes."""
    models = [
        sum(v["seconds"] for k, v in r["nodes"].items() if k.startswith("model.")) for r in runs
    ]
    tests = [
        sum(v["seconds"] for k, v in r["nodes"].items() if k.startswith("test.")) for r in runs
    ]
    return {
        "models": statistics.median(models) if models else None,
        "tests": statistics.median(tests) if tests else None,
    }


def source_fingerprint(root: Path | None = None) -> str:
    """A hash of the dbt project's files under ``root`` (default: ROOT, this tree)."""
    root = root or ROOT
    digest = hashlib.sha256()
    for name in PROJECT_FILES:
        path = root / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(str(file.relative_to(root)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def snapshot_project(attempts: int = 5) -> str:
    """Copy the dbt project to PROJECT and check it parses; retry while it is mid-edit."""
    for attempt in range(attempts):
        before = source_fingerprint()
        shutil.rmtree(PROJECT, ignore_errors=True)
        for name in PROJECT_FILES:
            source, dest = ROOT / name, PROJECT / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest)
            else:
                shutil.copyfile(source, dest)
        fingerprint = source_fingerprint(PROJECT)
        # full parse into the fixed target path, so every timed run partial-parses as a user's
        # repeated runs would
        shutil.rmtree(TARGET, ignore_errors=True)
        if fingerprint == before and dbt(["parse"])["returncode"] == 0:
            return fingerprint
        log(f"project snapshot {attempt + 1} did not parse or changed while copied; retrying")
        time.sleep(10)
    raise RuntimeError("the dbt project did not parse; see the output above")


def short(node: str) -> str:
    parts = node.split(".")
    return parts[2] if parts[0] == "model" else "test:" + parts[2][:60]


# --- main ---------------------------------------------------------------------------------------


def scenario(
    args, stream: Path, size: int, full_repeats: int, measure_run: bool, measure_baseline: bool
) -> dict:
    base = ensure_base(args, stream, size)
    result: dict = {
        "size": size,
        "baseline": [],
        "run_full": [],
        "build_full": [],
        "noop": [],
        "incremental": [],
        "startup": [],
    }
    built = DATA / f"built-{size}.duckdb.tmp"
    threads = os.cpu_count() or 1
    for r in range(full_repeats):
        if measure_run:
            place(base)
            log(f"N={size} #{r + 1}: dbt run --full-refresh")
            result["run_full"].append(dbt(["run", "--full-refresh"]))
        place(base)
        log(f"N={size} #{r + 1}: dbt build --full-refresh")
        result["build_full"].append(dbt(["build", *SCHEDULED_BUILD, "--full-refresh"]))
        shutil.copyfile(WAREHOUSE, built)
        if measure_baseline:
            place(base)
            log(f"N={size} #{r + 1}: baseline (DuckDB parse + unnest, threads={threads})")
            result["baseline"].append(baseline(project_parse_expression(), threads))
    for r in range(args.repeat):
        place(built)
        log(f"N={size} #{r + 1}: dbt build selecting no node (start-up only)")
        result["startup"].append(dbt(["build", "--select", "tag:bench_selects_nothing"]))
        append_increment(stream, size, args.increment, load_number=r)
        log(f"N={size} #{r + 1}: dbt build (+{args.increment} deliveries)")
        result["incremental"].append(dbt(["build", *SCHEDULED_BUILD]))
        # The floor comes after an incremental run, as in production: right after a full
        # refresh the "latest batch" the recent-rows tests check would be the whole history.
        log(f"N={size} #{r + 1}: dbt build (no new data)")
        result["noop"].append(dbt(["build", *SCHEDULED_BUILD]))
    shutil.copyfile(WAREHOUSE, WORK / f"after-incremental-{size}.duckdb")  # for profiling
    built.unlink(missing_ok=True)
    return result


def fmt(s: dict, unit: str = "s") -> str:
    if not s:
        return "-"
    return f"{s['median']:8.2f}{unit}  [{s['min']:.2f}-{s['max']:.2f}]"


def report(args, results: dict) -> str:
    n = results["scenarios"][str(args.deliveries)]
    d = results["scenarios"].get(str(2 * args.deliveries))
    lines = []
    w = lines.append
    rows = n["baseline"][0]["rows"] if n["baseline"] else {}
    w(
        f"flagsmith-warehouse marts benchmark  (sources {results['fingerprint']}, "
        f"{results['machine']['cpus']} cpus, duckdb {results['machine']['duckdb']}, "
        f"dbt-core {results['machine']['dbt']})"
    )
    w(
        f"data: corpus {args.corpus}, {args.deliveries} deliveries x {args.flags} flags, "
        f"{args.identities} identities, {args.environments} envs, seed {args.seed}; "
        f"rows flags={rows.get('flags')} "
        f"traits={rows.get('traits')} segments={rows.get('segments')}; "
        f"increment {args.increment}; repeat {args.repeat}"
    )
    w("")
    w(f"{'figure (median [min-max] of runs)':<46} {'wall s':>24} {'cpu s':>8} {'peak RSS':>9}")

    def row(label: str, runs: list[dict], key: str = "seconds") -> None:
        if not runs:
            return
        mem = summary(runs, "peak_rss_mb")
        cpu = summary(runs, "cpu_seconds")
        w(
            f"{label:<46} {fmt(summary(runs, key)):>24} {cpu['median'] if cpu else 0:7.1f}s"
            f" {mem['median'] if mem else 0:6.0f} MB"
        )

    row("baseline: DuckDB parse+unnest (process)", n["baseline"])
    row("baseline: the 4 CTAS statements only", n["baseline"], "query_seconds")
    row(f"dbt run --full-refresh (models), N={args.deliveries}", n["run_full"])
    row("dbt build --full-refresh, N", n["build_full"])
    row("dbt build selecting no node (start-up), N", n["startup"])
    row(f"dbt build +{args.increment} deliveries, N", n["incremental"])
    row("dbt build, no new data (floor), N", n["noop"])
    if d:
        row(f"dbt build --full-refresh, 2N={2 * args.deliveries}", d["build_full"])
        row(f"dbt build +{args.increment} deliveries, 2N", d["incremental"])
        row("dbt build, no new data (floor), 2N", d["noop"])
    w("")

    def med(runs: list[dict], key: str = "seconds") -> float | None:
        s = summary(runs, key)
        return s["median"] if s else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    targets = [
        (
            "full build / baseline (wall)",
            ratio(med(n["build_full"]), med(n["baseline"])),
            "<= 2.50",
            2.5,
        ),
        (
            "full build / baseline (cpu)",
            ratio(med(n["build_full"], "cpu_seconds"), med(n["baseline"], "cpu_seconds")),
            "(info)",
            None,
        ),
        (
            "full run (models only) / baseline (wall)",
            ratio(med(n["run_full"]), med(n["baseline"])),
            "(info)",
            None,
        ),
        (
            "incremental / full build (wall)",
            ratio(med(n["incremental"]), med(n["build_full"])),
            "<= 0.10",
            0.10,
        ),
        (
            "incremental / full build (cpu)",
            ratio(med(n["incremental"], "cpu_seconds"), med(n["build_full"], "cpu_seconds")),
            "(info)",
            None,
        ),
        (
            "noop floor / full build (wall)",
            ratio(med(n["noop"]), med(n["build_full"])),
            "(info)",
            None,
        ),
        (
            "start-up / full build (wall)",
            ratio(med(n["startup"]), med(n["build_full"])),
            "(info)",
            None,
        ),
    ]
    if d:
        targets += [
            (
                "incremental(2N) / incremental(N) (wall)",
                ratio(med(d["incremental"]), med(n["incremental"])),
                "<= 1.25",
                1.25,
            ),
            (
                "incremental(2N) / incremental(N) (cpu)",
                ratio(med(d["incremental"], "cpu_seconds"), med(n["incremental"], "cpu_seconds")),
                "(info)",
                None,
            ),
            (
                "incremental(2N) / incremental(N) (min wall)",
                ratio(summary(d["incremental"])["min"], summary(n["incremental"])["min"]),
                "(info)",
                None,
            ),
            ("noop(2N) / noop(N) (wall)", ratio(med(d["noop"]), med(n["noop"])), "(info)", None),
            (
                "full build(2N) / full build(N) (wall)",
                ratio(med(d["build_full"]), med(n["build_full"])),
                "(info)",
                None,
            ),
        ]
    w(f"{'ratio':<46} {'value':>9}  {'target':<8} verdict")
    for label, value, target, limit in targets:
        if value is None:
            continue
        verdict = "" if limit is None else ("PASS" if value <= limit else "MISS")
        w(f"{label:<46} {value:9.3f}  {target:<8} {verdict}")
    w("")
    for title, runs in (
        ("full build", n["build_full"]),
        ("full run", n["run_full"]),
        ("incremental N", n["incremental"]),
        ("incremental 2N", d["incremental"] if d else []),
        ("noop N", n["noop"]),
    ):
        if not runs:
            continue
        runs = [r for r in runs if r["nodes"]]
        if not runs:
            continue
        split = node_split(runs)
        nodes = ", ".join(f"{short(k)} {v:.2f}s" for k, v in slowest(runs))
        w(
            f"slowest nodes, {title} (sum models {split['models']:.1f}s, tests "
            f"{split['tests']:.1f}s): {nodes}"
        )
    models = [r for r in n["build_full"] if r["nodes"]]
    if models:
        w("")
        w("every model, full build (median seconds):")
        per_model = {k: v for k, v in slowest(models, top=1000) if k.startswith("model.")}
        for node, seconds in per_model.items():
            w(f"  {short(node):<46} {seconds:7.2f}s")
    failures = [
        (name, r["command"], r.get("failed"))
        for name, sc in results["scenarios"].items()
        for key in ("run_full", "build_full", "noop", "incremental")
        for r in sc[key]
        if r.get("returncode") or r.get("failed")
    ]
    if failures:
        w("")
        w(f"WARNING: {len(failures)} dbt invocations had failures (see the JSON):")
        for name, command, failed in failures[:5]:
            w(f"  N={name} {command}: {sorted((failed or {}).keys())[:4] or 'dbt error'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--flags", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--increment", type=int, default=1_000)
    parser.add_argument(
        "--corpus",
        choices=("production", "worst", "simulated"),
        default="production",
        help="bench/corpus.py shapes (production: most evaluations repeat their state; worst: "
        "most change it) or loader.simulate's stream",
    )
    parser.add_argument(
        "--identities",
        type=int,
        default=None,
        help="default: deliveries / 5 (production, worst), deliveries / 10 (simulated)",
    )
    parser.add_argument("--environments", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-interval", type=float, default=45.0)
    parser.add_argument("--no-double", action="store_true", help="skip the 2N history check")
    parser.add_argument(
        "--double-full-repeats",
        type=int,
        default=1,
        help="full builds of the 2N base (only its result is needed)",
    )
    parser.add_argument("--baseline-child", help=argparse.SUPPRESS)
    parser.add_argument("--parse", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(args.baseline_child, args.parse, args.threads)
        return 0
    per_identity = 10 if args.corpus == "simulated" else 5
    args.identities = args.identities or max(1, args.deliveries // per_identity)

    from importlib.metadata import version

    import duckdb

    sizes = [args.deliveries] + ([] if args.no_double else [2 * args.deliveries])
    stream = ensure_stream(args, max(sizes) + args.increment)
    WORK.mkdir(parents=True, exist_ok=True)
    fingerprint = snapshot_project()
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(),
        "args": vars(args),
        "fingerprint": fingerprint,
        "machine": {
            "cpus": os.cpu_count(),
            "duckdb": duckdb.__version__,
            "dbt": version("dbt-core"),
            "dbt-duckdb": version("dbt-duckdb"),
        },
        "scenarios": {},
    }
    results["scenarios"][str(args.deliveries)] = scenario(
        args, stream, args.deliveries, args.repeat, measure_run=True, measure_baseline=True
    )
    if not args.no_double:
        results["scenarios"][str(2 * args.deliveries)] = scenario(
            args,
            stream,
            2 * args.deliveries,
            args.double_full_repeats,
            measure_run=False,
            measure_baseline=False,
        )
    if source_fingerprint() != fingerprint:
        log(
            f"note: the working tree's dbt project changed during the run; the figures are for "
            f"the snapshot {fingerprint} in {PROJECT}"
        )
    text = report(args, results)
    results["report"] = text
    name = f"marts-n{args.deliveries}-f{args.flags}-{datetime.now():%Y%m%dT%H%M%S}.json"
    (OUT / name).write_text(json.dumps(results, indent=1, default=str))
    print(text)
    print(f"\nresults: {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
