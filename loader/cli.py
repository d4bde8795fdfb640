"""`flagsmith-warehouse`: serve, load, transform, run, status, docs, report, export, import,
forget, demo (the README's Commands)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from .config import ConfigError, Settings

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> float:
    """`90`, `30s`, `15m`, `1h30m` -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not text or not match:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30s, 15m, 1h)")
        hours, minutes, secs = (int(part or 0) for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return seconds


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    return settings.with_overrides(
        spool_dir=Path(args.spool_dir).absolute() if getattr(args, "spool_dir", None) else None,
        batch_size=getattr(args, "batch_size", None),
        commit_size=getattr(args, "commit_size", None),
        allow_unsigned=True if getattr(args, "allow_unsigned", False) else None,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings = _settings(args)
    if settings.has_secrets and settings.allow_unsigned:
        print(
            "refusing to start: --allow-unsigned was given but secrets are configured; "
            "drop one of the two.",
            file=sys.stderr,
        )
        return 2
    if not settings.has_secrets and not settings.allow_unsigned:
        print(
            "refusing to start: no webhook secret. Set FLAGSMITH_WEBHOOK_SECRET (or "
            "FLAGSMITH_WEBHOOK_SECRETS_FILE) to the secret configured on the Flagsmith webhook, "
            "or pass --allow-unsigned to accept unsigned deliveries (anyone who can reach the "
            "endpoint can then write data).",
            file=sys.stderr,
        )
        return 2
    if settings.allow_unsigned:
        print(
            "WARNING: --allow-unsigned: deliveries are NOT verified; anyone who can reach this "
            "endpoint can write data. They are stored with signature_status='unsigned', and "
            "/metrics reports flagsmith_receiver_unsigned_mode 1.",
            file=sys.stderr,
        )

    serve(
        lambda: _settings(args),
        args.host,
        args.port,
        args.workers,
        args.threads,
        args.connections,
    )
    return 0


def _load_once(settings: Settings, args: argparse.Namespace) -> int:
    from .locks import LockBusy
    from .pipeline import load, print_progress

    interactive = sys.stderr.isatty()
    try:
        summary = load(
            settings,
            max_batches=getattr(args, "max_batches", None),
            wait=getattr(args, "wait", False),
            progress=print_progress if interactive else None,
        )
    except LockBusy as busy:
        print(f"not loading: {busy}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: a scheduler may simply try again later
    except Exception as error:
        cause = _out_of_memory(error)
        if cause is None:
            raise
        from .duckdb_destination import parse_size

        cap = settings.loader_duckdb_memory
        try:
            bigger = f"{max(1, -(-2 * parse_size(cap) // 1_000_000))}MB"
        except ValueError:  # a value DuckDB took but this reading does not (80%, -1)
            bigger = "twice that"
        print(
            f"\nload failed: DuckDB ran out of memory under the loader's cap, "
            f"FLAGSMITH_LOADER_DUCKDB_MEMORY={cap} ({cause}). Bodies of hundreds "
            f"of KB (projects with many hundreds of flags) need more: try {bigger}. Nothing is "
            "lost: the deliveries stay in the spool and the next load takes them again.",
            file=sys.stderr,
        )
        return 1
    if interactive:
        sys.stderr.write("\n")
    print(summary.line(), file=sys.stderr)
    return 0


def _out_of_memory(error: BaseException | None) -> str | None:
    """DuckDB's out-of-memory message, if it is somewhere in the chain dlt wrapped it in."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        at = text.find("Out of Memory Error")
        if at >= 0:
            return text[at:].splitlines()[0]
        error = error.__cause__ or error.__context__
    return None


def cmd_load(args: argparse.Namespace) -> int:
    return _load_once(_settings(args), args)


def _dbt_extra(args: argparse.Namespace) -> list[str]:
    extra = []
    if getattr(args, "full_refresh", False):
        extra.append("--full-refresh")
    if getattr(args, "select", None):
        extra += ["--select", *args.select]
    return extra + list(getattr(args, "dbt_args", []) or [])


def cmd_transform(args: argparse.Namespace) -> int:
    from .transform import SCHEDULED_BUILD, run_dbt

    return run_dbt(_settings(args), "build", [*SCHEDULED_BUILD, *_dbt_extra(args)])


def cmd_run(args: argparse.Namespace) -> int:
    from .transform import SCHEDULED_BUILD, run_dbt

    settings = _settings(args)
    while True:
        started = time.monotonic()
        status = _load_once(settings, args)
        if status == 0:
            status = run_dbt(settings, "build", [*SCHEDULED_BUILD, *_dbt_extra(args)])
        if args.every is None:
            return status
        if status != 0:
            print(
                f"this run failed (exit {status}); trying again in {args.every:.0f}s",
                file=sys.stderr,
            )
        time.sleep(max(0.0, args.every - (time.monotonic() - started)))


def cmd_export(args: argparse.Namespace) -> int:
    from .history import HistoryError, export

    try:
        summary = export(_settings(args), Path(args.directory))
    except HistoryError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    print(summary.line(f"exported to {args.directory}:"), file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .history import HistoryError, import_

    try:
        summary = import_(_settings(args), Path(args.directory))
    except HistoryError as error:
        print(f"import failed: {error}", file=sys.stderr)
        return 1
    print(summary.line(f"imported from {args.directory}:"), file=sys.stderr)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from .privacy import forget

    summary = forget(_settings(args), args.identity, args.environment_id)
    print(summary.line(), file=sys.stderr)
    if summary.transform_status:
        print(
            f"the erasure is complete, but the dbt build after it failed (exit "
            f"{summary.transform_status}): the next transform rebuilds the marts that count "
            "across identities",
            file=sys.stderr,
        )
        return summary.transform_status
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from .status import check, render

    status = check(
        _settings(args),
        max_backlog_age=timedelta(seconds=args.max_backlog_age),
        max_marts_lag=timedelta(seconds=args.max_marts_lag),
    )
    print(status.as_json() if args.json else render(status))
    return status.exit_code


def warehouse_missing(settings: Settings) -> str | None:
    """Why the configured warehouse cannot be described, or None when it exists: dbt would
    otherwise create an empty DuckDB file, or describe a database without the project's
    tables, and the docs would show nothing."""
    from .status import WarehouseUnavailable, warehouse_figures

    if settings.warehouse == "spark":
        if not settings.spark_warehouse_dir.exists():
            return f"the Spark warehouse folder {settings.spark_warehouse_dir} does not exist"
        return None
    try:
        figures = warehouse_figures(settings)
    except WarehouseUnavailable as unavailable:
        if unavailable.busy:
            return None  # dbt waits for the writer lock like any transform
        return str(unavailable)
    if not figures.marts_built:
        return "the warehouse holds no marts yet: run `flagsmith-warehouse run` first"
    return None


def cmd_docs(args: argparse.Namespace) -> int:
    from .transform import run_dbt, target_path

    settings = _settings(args)
    missing = warehouse_missing(settings)
    if missing:
        print(f"docs: {missing}", file=sys.stderr)
        return 2
    status = run_dbt(settings, ["docs", "generate"], ["--quiet"])
    if status != 0:
        return status
    target = target_path(settings)
    print(f"docs written to {target} (open {target / 'index.html'} through --serve)")
    if args.serve:
        return run_dbt(settings, ["docs", "serve"], ["--port", str(args.port), "--host", args.host])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError, write_report

    settings = _settings(args)
    try:
        path = write_report(settings, Path(args.output))
    except ReportError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        Path(args.data_dir),
        deliveries=args.deliveries,
        identities=args.identities,
        history_days=args.history_days,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagsmith-warehouse",
        description="Flagsmith identity webhooks into a warehouse: receive, load, transform.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the webhook receiver under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    serve.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    serve.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="connections per worker at most (default 1000); waiting ones give way to new ones",
    )
    serve.add_argument("--spool-dir", help="overrides FLAGSMITH_SPOOL_DIR")
    serve.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept deliveries without a signature when no secret is configured (unsafe)",
    )
    serve.set_defaults(handler=cmd_serve)

    def add_load_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--spool-dir", help="overrides FLAGSMITH_SPOOL_DIR")
        command.add_argument(
            "--batch-size",
            type=int,
            help="deliveries read from the spool at a time: the loader's memory (default 1000)",
        )
        command.add_argument(
            "--commit-size",
            type=int,
            help="deliveries per dlt load, committed and released together (default 20000)",
        )
        command.add_argument("--max-batches", type=int, help="stop after this many batches")
        command.add_argument(
            "--wait", action="store_true", help="wait for a running load instead of exiting 75"
        )

    def add_dbt_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--full-refresh", action="store_true", help="rebuild incremental models"
        )
        command.add_argument("--select", nargs="+", help="dbt node selection")
        command.add_argument("dbt_args", nargs="*", help="more dbt arguments, after --")

    load = commands.add_parser("load", help="drain the spool into the raw tables once")
    add_load_options(load)
    load.set_defaults(handler=cmd_load)

    transform = commands.add_parser("transform", help="dbt build of the marts")
    add_dbt_options(transform)
    transform.set_defaults(handler=cmd_transform)

    run = commands.add_parser("run", help="load, then transform")
    add_load_options(run)
    add_dbt_options(run)
    run.add_argument("--every", type=parse_duration, help="repeat every DURATION (30s, 15m, 1h)")
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser(
        "status",
        help="what waits in the spool and how fresh the marts are; exit 0 healthy, 1 not, "
        "2 cannot tell",
    )
    status.add_argument("--spool-dir", help="overrides FLAGSMITH_SPOOL_DIR")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.add_argument(
        "--max-backlog-age",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="unhealthy when the oldest delivery waiting in the spool is older (default 10m)",
    )
    status.add_argument(
        "--max-marts-lag",
        type=parse_duration,
        default=3600.0,
        metavar="DURATION",
        help="unhealthy when the marts' newest delivery is this far behind the raw tables' "
        "(default 1h)",
    )
    status.set_defaults(handler=cmd_status)

    docs = commands.add_parser(
        "docs", help="dbt docs generate (and --serve) against the configured warehouse"
    )
    docs.add_argument("--serve", action="store_true", help="then serve them over HTTP")
    docs.add_argument("--host", default="127.0.0.1")
    docs.add_argument("--port", type=int, default=8080)
    docs.set_defaults(handler=cmd_docs)

    report = commands.add_parser(
        "report", help="one self-contained HTML page of experiments and segments over time"
    )
    report.add_argument(
        "--output", default="flagsmith-report.html", metavar="FILE", help="(default %(default)s)"
    )
    report.set_defaults(handler=cmd_report)

    export = commands.add_parser(
        "export", help="write both raw tables of the configured warehouse as parquet into DIR"
    )
    export.add_argument("directory", metavar="DIR", help="an empty (or new) folder")
    export.set_defaults(handler=cmd_export)

    import_ = commands.add_parser(
        "import", help="load an export into the configured warehouse, skipping what is there"
    )
    import_.add_argument("directory", metavar="DIR", help="a folder `export` wrote")
    import_.set_defaults(handler=cmd_import)

    forget = commands.add_parser(
        "forget",
        help="erase identities from the raw tables, the spool backlog and every mart",
        description="Erase identities: every delivery of each (raw tables, this node's spool "
        "backlog; other nodes' loaders drop theirs) and every mart row about it. An audit row "
        "per erasure goes to flagsmith_raw.erasures, keyed by HMAC-SHA256 with "
        "FLAGSMITH_ERASURE_KEY, never the identity. See docs/personal-data.md.",
    )
    forget.add_argument(
        "--identity", action="append", required=True, help="an identity to erase (repeatable)"
    )
    forget.add_argument(
        "--environment-id",
        type=int,
        help="erase only that environment's deliveries (default: every environment)",
    )
    forget.add_argument("--spool-dir", help="overrides FLAGSMITH_SPOOL_DIR")
    forget.set_defaults(handler=cmd_forget)

    demo = commands.add_parser("demo", help="receive, load and model simulated traffic")
    demo.add_argument("--data-dir", default="data/demo", help="wiped and used for the demo")
    demo.add_argument("--deliveries", type=int, default=400, help="live webhooks over HTTP")
    demo.add_argument("--identities", type=int, default=300)
    demo.add_argument(
        "--history-days",
        type=int,
        default=28,
        help="days of simulated history laid down before the live webhooks (default 28)",
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
