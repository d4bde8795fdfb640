"""Receiver throughput and latency against a bare endpoint, measured in the same run.

    .venv/bin/python bench/receiver.py [--seconds 5] [--pairs 10] [--connections 16]
        [--workers 2] [--threads 8]

Three servers run side by side for the whole bench: the real receiver as `serve` runs it (HMAC
verification, classification, spool append with fsync before the 202), and a bare Flask endpoint
that reads the body and stores nothing, twice: under the same gunicorn settings as the receiver
(`serve`'s worker class, 2 workers by default) and under plain gunicorn `gthread` as `serve` ran
it before (2 workers x 8 threads, as many connections per worker as threads). wrk (Debian package
`wrk`) drives one at a time with the same signed ~4.4 KB Flagsmith body, in rounds of short runs
whose order rotates, so a drift in the machine's speed lands on every side of a round. Each
throughput ratio (receiver over one bare endpoint) is taken per round, then the median. Reports
medians of requests per second and p50/p99 latency, the ratios (target >= 0.6), the receiver's
p99 (target <= 50 ms at 16 connections), and checks that every 2xx is durable: after a graceful
stop, the spool holds at least as many deliveries as wrk counted 2xx answers, warm-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loader.processes import free_port, stop, wait_ready  # noqa: E402
from loader.server import DEFAULT_THREADS, DEFAULT_WORKERS  # noqa: E402
from loader.simulate import generate  # noqa: E402
from loader.spool import iter_all_deliveries  # noqa: E402

SECRET = "bench-secret"

BARE_APP = textwrap.dedent(
    """
    import sys
    from flask import Flask, request
    from gunicorn.app.base import BaseApplication
    sys.path.insert(0, {repo!r})
    from loader.server import gunicorn_options

    app = Flask("bare")

    @app.post("/webhooks/flagsmith")
    def bare():
        request.get_data(cache=False)
        return {{"delivery_id": "none"}}, 202

    @app.get("/readyz")
    def ready():
        return {{"status": "ready"}}

    class Bare(BaseApplication):
        def load_config(self):
            options = gunicorn_options("127.0.0.1", {port}, {workers}, {threads})
            options.update({overrides!r})
            for key, value in options.items():
                if key not in ("worker_exit", "child_exit"):
                    self.cfg.set(key, value)

        def load(self):
            return app

    Bare().run()
    """
)

WRK_SCRIPT = textwrap.dedent(
    """
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["X-Flagsmith-Signature"] = "{signature}"
    local f = io.open("{body_path}", "rb")
    wrk.body = f:read("*all")
    f:close()
    done = function(summary, latency, requests)
        io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.errors.status,
            summary.duration, latency:percentile(50), latency:percentile(99)))
    end
    """
)


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT"))
    requests, non_2xx, duration_us, p50_us, p99_us = map(int, line.split()[1:])
    return {
        "requests": requests,
        "non_2xx": non_2xx,
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
    }


# The bare endpoints: under `serve`'s own settings, and under gunicorn gthread as `serve` ran it
# before the gevent worker (threads per worker, no more connections per worker than threads).
BARE_SIDES = {"bare": {}, "bare-gthread": {"worker_class": "gthread", "worker_connections": None}}


def start_bare(
    workdir: Path, name: str, workers: int, threads: int
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    overrides = dict(BARE_SIDES[name])
    if "worker_connections" in overrides:
        overrides["worker_connections"] = threads
    app_file = workdir / f"{name}_app.py"
    app_file.write_text(
        BARE_APP.format(
            repo=str(REPO), port=port, workers=workers, threads=threads, overrides=overrides
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(app_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def start_real(
    workdir: Path, workers: int, threads: int, tree: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """`serve` from this tree, or from `tree` (another version of the project, e.g. unpacked by
    `git archive`), each with a spool of its own."""
    spool = workdir / ("spool" if tree is None else "spool-compared")
    env = dict(os.environ, FLAGSMITH_WEBHOOK_SECRET=SECRET, FLAGSMITH_SPOOL_DIR=str(spool))
    port = free_port()
    options = ["--workers", str(workers), "--threads", str(threads)]
    process = subprocess.Popen(
        [sys.executable, "-m", "loader.cli", "serve", "--port", str(port), *options],
        cwd=tree or REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--pairs", type=int, default=10, help="rounds (one run of each server each)"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="every server")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="every server")
    parser.add_argument(
        "--compare-tree",
        type=Path,
        help="also run `serve` from this directory (another version, e.g. `git archive` of"
        " main unpacked), as side receiver-compared",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    body = next(d.body for d in generate(50, seed=1, n_flags=12) if len(d.body) > 3500)
    body_path = workdir / "body.json"
    body_path.write_bytes(body)
    from loader.signature import sign

    script = workdir / "post.lua"
    script.write_text(
        WRK_SCRIPT.format(signature=sign(body, SECRET.encode()), body_path=str(body_path))
    )
    receivers = ("receiver", "receiver-compared") if args.compare_tree else ("receiver",)
    sides = (*BARE_SIDES, *receivers)
    servers = {}
    try:
        for name in BARE_SIDES:
            servers[name] = start_bare(workdir, name, args.workers, args.threads)
        servers["receiver"] = start_real(workdir, args.workers, args.threads)
        if args.compare_tree:
            servers["receiver-compared"] = start_real(
                workdir, args.workers, args.threads, args.compare_tree.resolve()
            )
        for process, url in servers.values():
            wait_ready(url, process)
        acknowledged = 0
        for side in sides:  # warm-up: imports, first segment, page cache
            warm = run_wrk(f"{servers[side][1]}/webhooks/flagsmith", script, 2, args.connections)
            if side == "receiver":
                acknowledged += warm["requests"] - warm["non_2xx"]
        rounds = []
        for number in range(args.pairs):
            shift = number % len(sides)
            order = sides[shift:] + sides[:shift]
            result = {}
            for side in order:
                url = f"{servers[side][1]}/webhooks/flagsmith"
                result[side] = run_wrk(url, script, args.seconds, args.connections)
            real = result["receiver"]
            acknowledged += real["requests"] - real["non_2xx"]
            rounds.append(result)
            print(
                f"round {number + 1} ({order[0]} first): "
                + " | ".join(f"{side} {result[side]['rps']:.0f} req/s" for side in BARE_SIDES)
                + "".join(
                    f" | {side} {result[side]['rps']:.0f} req/s p99"
                    f" {result[side]['p99_ms']:.1f} ms, {result[side]['non_2xx']} non-2xx,"
                    " ratios "
                    + ", ".join(
                        f"{result[side]['rps'] / result[bare]['rps']:.2f}" for bare in BARE_SIDES
                    )
                    for side in receivers
                ),
                flush=True,
            )
    finally:
        for process, _ in servers.values():
            stop(process)
    stored = sum(1 for _ in iter_all_deliveries(workdir / "spool"))
    durable = stored >= acknowledged

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    ratios = {
        (real, bare): [r[real]["rps"] / r[bare]["rps"] for r in rounds]
        for real in receivers
        for bare in BARE_SIDES
    }
    ratio = statistics.median(ratios["receiver", "bare"])
    p99 = median("receiver", "p99_ms")
    summary = {
        "body_bytes": len(body),
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds_run": args.pairs,
        "workers": args.workers,
        "threads": args.threads,
        **{
            f"{side.replace('-', '_')}_{key}_median": median(side, key)
            for side in sides
            for key in ("rps", "p50_ms", "p99_ms")
        },
        "throughput_ratio_median": ratio,
        "throughput_ratios": {
            f"{real}/{bare}": {
                "median": statistics.median(values),
                "range": [min(values), max(values)],
            }
            for (real, bare), values in ratios.items()
        },
        "acknowledged": acknowledged,
        "stored": stored,
        "every_2xx_durable": durable,
        "rounds": rounds,
    }
    print()
    print(
        f"body {len(body)} bytes, {args.connections} connections, {args.pairs} rounds of"
        f" {args.seconds}s runs, {args.workers} workers, {args.threads} threads"
    )
    print(f"{'':14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}   (medians)")
    for side in sides:
        print(
            f"{side:14}{median(side, 'rps'):>10.0f}{median(side, 'p50_ms'):>10.1f}"
            f"{median(side, 'p99_ms'):>10.1f}"
        )
    for (real, bare), values in ratios.items():
        value = statistics.median(values)
        print(
            f"throughput ratio {real}/{bare}: {value:.2f}, rounds {min(values):.2f} to"
            f" {max(values):.2f}  (target >= 0.60: {'PASS' if value >= 0.6 else 'MISS'})"
        )
    print(f"receiver p99: {p99:.1f} ms  (target <= 50: {'PASS' if p99 <= 50 else 'MISS'})")
    print(
        f"every 2xx durable: {'PASS' if durable else 'FAIL'} ({acknowledged} answered 2xx,"
        f" {stored} in the spool)"
    )
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "receiver.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if durable else 1


if __name__ == "__main__":
    sys.exit(main())
