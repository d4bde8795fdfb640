"""Receiver throughput and latency against a bare endpoint, measured in the same run.

    .venv/bin/python bench/receiver.py [--seconds 5] [--pairs 10] [--connections 16]
        [--workers 2] [--threads 8]

Two servers with identical gunicorn settings (gthread, by default 2 workers x 8 threads, `serve`'s
defaults) run side by side for the whole bench: the real receiver (HMAC verification,
classification, spool append with fsync before the 202) and a bare Flask endpoint that reads the
body and stores nothing. wrk (Debian package `wrk`) drives one at a time with the same signed
~4.4 KB Flagsmith body, in pairs of short runs whose order alternates (bare first, then receiver
first), so a drift in the machine's speed lands on both sides of a pair. The throughput ratio is
taken per pair, then the median. Reports medians of requests per second and p50/p99 latency, the
ratio (target >= 0.6), the receiver's p99 (target <= 50 ms at 16 connections), and checks that
every 2xx is durable: after a graceful stop, the spool holds at least as many deliveries as wrk
counted 2xx answers, warm-up included.
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

from loader.demo import free_port, start_receiver, stop, wait_ready  # noqa: E402
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


def start_bare(workdir: Path, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    app_file = workdir / "bare_app.py"
    app_file.write_text(
        BARE_APP.format(repo=str(REPO), port=port, workers=workers, threads=threads)
    )
    process = subprocess.Popen(
        [sys.executable, str(app_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def start_real(workdir: Path, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    spool = workdir / "spool"  # workdir is new: the spool starts empty
    env = dict(os.environ, FLAGSMITH_WEBHOOK_SECRET=SECRET, FLAGSMITH_SPOOL_DIR=str(spool))
    port = free_port()
    process = start_receiver(env, port, ["--workers", str(workers), "--threads", str(threads)])
    return process, f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--pairs", type=int, default=10, help="pairs of runs (bare, receiver)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="both servers")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="both servers")
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
    servers = {}
    try:
        servers["bare"] = start_bare(workdir, args.workers, args.threads)
        servers["receiver"] = start_real(workdir, args.workers, args.threads)
        for process, url in servers.values():
            wait_ready(url, process)
        acknowledged = 0
        for side in ("bare", "receiver"):  # warm-up: imports, first segment, page cache
            warm = run_wrk(f"{servers[side][1]}/webhooks/flagsmith", script, 2, args.connections)
            if side == "receiver":
                acknowledged += warm["requests"] - warm["non_2xx"]
        rounds = []
        for number in range(args.pairs):
            order = ("bare", "receiver") if number % 2 == 0 else ("receiver", "bare")
            pair = {}
            for side in order:
                url = f"{servers[side][1]}/webhooks/flagsmith"
                pair[side] = run_wrk(url, script, args.seconds, args.connections)
            real = pair["receiver"]
            acknowledged += real["requests"] - real["non_2xx"]
            rounds.append(pair)
            bare = pair["bare"]
            print(
                f"pair {number + 1} ({order[0]} first): bare {bare['rps']:.0f} req/s | receiver "
                f"{real['rps']:.0f} req/s p50 {real['p50_ms']:.1f} ms p99 {real['p99_ms']:.1f} ms,"
                f" {real['non_2xx']} non-2xx | ratio {real['rps'] / bare['rps']:.2f}",
                flush=True,
            )
    finally:
        for process, _ in servers.values():
            stop(process)
    stored = sum(1 for _ in iter_all_deliveries(workdir / "spool"))
    durable = stored >= acknowledged

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    ratios = [r["receiver"]["rps"] / r["bare"]["rps"] for r in rounds]
    ratio = statistics.median(ratios)
    p99 = median("receiver", "p99_ms")
    summary = {
        "body_bytes": len(body),
        "connections": args.connections,
        "seconds": args.seconds,
        "pairs": args.pairs,
        "workers": args.workers,
        "threads": args.threads,
        "bare_rps_median": median("bare", "rps"),
        "bare_p50_ms_median": median("bare", "p50_ms"),
        "bare_p99_ms_median": median("bare", "p99_ms"),
        "receiver_rps_median": median("receiver", "rps"),
        "receiver_p50_ms_median": median("receiver", "p50_ms"),
        "receiver_p99_ms_median": p99,
        "throughput_ratio_median": ratio,
        "throughput_ratio_range": [min(ratios), max(ratios)],
        "acknowledged": acknowledged,
        "stored": stored,
        "every_2xx_durable": durable,
        "rounds": rounds,
    }
    print()
    print(
        f"body {len(body)} bytes, {args.connections} connections, {args.pairs} pairs of"
        f" {args.seconds}s runs,"
        f" gunicorn gthread {args.workers} workers x {args.threads} threads"
    )
    print(f"{'':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}   (medians)")
    for side in ("bare", "receiver"):
        print(
            f"{side:10}{median(side, 'rps'):>10.0f}{median(side, 'p50_ms'):>10.1f}"
            f"{median(side, 'p99_ms'):>10.1f}"
        )
    print(
        f"throughput ratio receiver/bare: {ratio:.2f}, pairs {min(ratios):.2f} to "
        f"{max(ratios):.2f}  (target >= 0.60: {'PASS' if ratio >= 0.6 else 'MISS'})"
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
