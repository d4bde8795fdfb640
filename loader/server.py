"""Running the receiver under gunicorn, configured in code so `serve` needs no config file.

Defaults, chosen for a 2-core machine and measured with bench/receiver.py:
- `loader.worker.ReceiverWorker`: gunicorn's `gthread` worker whose main thread reads each
  request in full before a request thread takes it, with deadlines on headers and body (see that
  module), so slow, idle or half-open connections hold no thread. The request path waits on
  fsync, not on the CPU, and waiting requests of one process share flushes in the spool (group
  commit), so threads raise throughput. 2 workers (one per core; a crash or a stalled disk in
  one leaves the other answering), 8 threads each, up to 1,000 connections each. On bigger
  machines: one worker per core, 8-16 threads.
- `timeout` 30 s: a worker silent that long is restarted. Flagsmith itself waits 10 s.
- `graceful_timeout` 20 s: on SIGTERM requests in flight finish and the open spool segment is
  sealed before the worker exits; SIGHUP reloads workers (and the secrets file) the same way.
- `keepalive` 5 s: an idle kept-alive connection is closed after that long.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

from gunicorn.app.base import BaseApplication

from .config import ConfigError, Settings

DEFAULT_WORKERS = 2
DEFAULT_THREADS = 8
DEFAULT_CONNECTIONS = 1000


def _worker_exit(server, worker) -> None:
    """Seal the open spool segment so the loader gets it without waiting for the lock to drop."""
    from .receiver import EXTENSION

    app = getattr(worker, "wsgi", None)
    receiver = getattr(app, "extensions", {}).get(EXTENSION) if app is not None else None
    if receiver is not None:
        receiver.writer.close()


def _child_exit(server, worker) -> None:
    from .metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


class ReceiverApplication(BaseApplication):
    """gunicorn in code.

    The master reads the settings at start and again on SIGHUP, before gunicorn forks the new
    workers, so a graceful reload applies an edited secrets file without dropping a request. An
    edit that breaks the file is reported and the last good settings stay in force: a typo must
    not take the endpoint down while Flagsmith is posting to it.
    """

    def __init__(self, settings_factory: Callable[[], Settings], options: dict) -> None:
        self.settings_factory = settings_factory
        self.settings = settings_factory()
        self.options = options
        super().__init__()

    def reload(self) -> None:
        try:
            self.settings = self.settings_factory()
        except ConfigError as error:
            print(f"configuration error, keeping the previous settings: {error}", file=sys.stderr)
        super().reload()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .receiver import create_app

        return create_app(self.settings)


def gunicorn_options(
    host: str,
    port: int,
    workers: int = DEFAULT_WORKERS,
    threads: int = DEFAULT_THREADS,
    connections: int = DEFAULT_CONNECTIONS,
) -> dict:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "loader.worker.ReceiverWorker",
        # Per worker: request threads, and the connections it holds at most (waiting ones give
        # way to new ones; see loader/worker.py).
        "worker_connections": connections,
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "worker_exit": _worker_exit,
        "child_exit": _child_exit,
        "proc_name": "flagsmith-warehouse-receiver",
        # No runtime control socket: it would be one more way in, and two receivers on one
        # machine would fight over its default path.
        "control_socket_disable": True,
    }


def _prepare_multiprocess_metrics() -> None:
    """A fresh folder for the workers' metric files, set before prometheus_client is imported."""
    if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError("prometheus_client was imported before the metrics folder was set")
    folder = tempfile.mkdtemp(prefix="flagsmith-warehouse-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    master = os.getpid()

    def remove_folder() -> None:
        if os.getpid() == master:  # the workers are forks: only the master removes it
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove_folder)


def serve(
    settings_factory: Callable[[], Settings],
    host: str,
    port: int,
    workers: int,
    threads: int,
    connections: int = DEFAULT_CONNECTIONS,
) -> None:
    # One JSON line per delivery on stderr, next to gunicorn's own log.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    receiver_log = logging.getLogger("flagsmith_warehouse.receiver")
    receiver_log.addHandler(handler)
    receiver_log.setLevel(logging.INFO)
    receiver_log.propagate = False
    # The log line carries its own fields: skip the look-up of the caller's frame `logging` makes
    # for every record (the Logging HOWTO's "Optimization" section). Thread and process fields
    # stay: gunicorn's error log prints `%(process)d`.
    logging._srcfile = None
    _prepare_multiprocess_metrics()
    options = gunicorn_options(host, port, workers, threads, connections)
    ReceiverApplication(settings_factory, options).run()
