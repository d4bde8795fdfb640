"""Running the receiver under gunicorn, configured in code so `serve` needs no config file.

The defaults suit a 2-core machine: 2 worker processes (one per core; a crash or a slow fsync in
one leaves the other answering) with 8 threads each. The threads matter because the request
path waits on fsync, and waiting requests share flushes in the spool (group commit): more
concurrent requests per process means more deliveries per fsync. On bigger machines raise
`--workers` to the number of cores; threads rarely need to exceed 16.
"""

from __future__ import annotations

import logging
import sys

from gunicorn.app.base import BaseApplication

from .config import Settings
from .receiver import EXTENSION, create_app

DEFAULT_WORKERS = 2
DEFAULT_THREADS = 8


def _worker_exit(server, worker) -> None:
    """Seal the open spool segment so the loader gets it without waiting for the lock to drop."""
    app = getattr(worker, "wsgi", None)
    receiver = getattr(app, "extensions", {}).get(EXTENSION) if app is not None else None
    if receiver is not None:
        receiver.writer.close()


class ReceiverApplication(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(self.settings)


def gunicorn_options(
    host: str, port: int, workers: int = DEFAULT_WORKERS, threads: int = DEFAULT_THREADS
) -> dict:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # Flagsmith waits 10 s; a request that takes longer is lost anyway.
        "timeout": 30,
        # On SIGTERM, requests in flight get this long to finish before workers are stopped.
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "worker_exit": _worker_exit,
        "proc_name": "flagsmith-warehouse-receiver",
        # No runtime control socket: it would be one more way in, and two receivers on one
        # machine would fight over its default path.
        "control_socket_disable": True,
    }


def serve(settings: Settings, host: str, port: int, workers: int, threads: int) -> None:
    # One JSON line per delivery on stderr, next to gunicorn's own log.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    receiver_log = logging.getLogger("flagsmith_warehouse.receiver")
    receiver_log.addHandler(handler)
    receiver_log.setLevel(logging.INFO)
    receiver_log.propagate = False
    ReceiverApplication(settings, gunicorn_options(host, port, workers, threads)).run()
