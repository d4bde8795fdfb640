"""Run `load` and kill the process with SIGKILL at a chosen point: a crash test harness.

    python -m tests.harness.crash_loader POINT

Settings come from the environment like `flagsmith-warehouse load`. The kill is wired in here by
wrapping the loader's own functions, so the production code carries no test hook. POINT is the
moment of the second dlt load (the first commits normally) at which to die:

    claimed        a segment moved to claimed/, nothing read yet
    extracted      dlt extracted the load's batches into a load package, not normalized
    normalized     normalized, not loaded
    loading        the identity rows appended to the raw table (or its file put into the lake),
                   the package not finished
    committed      the raw tables have the load, the spool still has its segments
    releasing      half of the load's segments removed from the spool
"""

from __future__ import annotations

import os
import signal
import sys

from loader import pipeline
from loader.config import Settings
from loader.spool import SpoolReader

POINTS = ("claimed", "extracted", "normalized", "loading", "committed", "releasing")


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(point: str) -> None:
    if point not in POINTS:
        raise SystemExit(f"unknown point {point!r}; one of {', '.join(POINTS)}")
    loads = {"n": 0}

    real_group = pipeline._load_group

    def load_group(*args, **kwargs):
        loads["n"] += 1
        return real_group(*args, **kwargs)

    pipeline._load_group = load_group

    real_read = SpoolReader.read

    def read(self, path):
        if point == "claimed" and loads["n"] == 2:
            die()
        return real_read(self, path)

    SpoolReader.read = read

    import dlt
    from dlt.destinations.impl.duckdb import duck
    from dlt.destinations.impl.filesystem import filesystem

    real_normalize = dlt.Pipeline.normalize
    real_load = dlt.Pipeline.load

    def normalize(self, *args, **kwargs):
        if point == "extracted" and loads["n"] == 2:
            die()
        return real_normalize(self, *args, **kwargs)

    def load(self, *args, **kwargs):
        if point == "normalized" and loads["n"] == 2:
            die()
        return real_load(self, *args, **kwargs)

    def die_after(real_job):
        def job(self):
            real_job(self)
            if point == "loading" and loads["n"] == 2 and "identity_webhooks" in self._file_path:
                die()

        return job

    dlt.Pipeline.normalize = normalize
    dlt.Pipeline.load = load
    # The job that appends a load's identity rows: a DuckDB copy, or a file put into the lake.
    for job_class in (duck.DuckDbCopyJob, filesystem.FilesystemLoadJob):
        job_class.run = die_after(job_class.run)

    real_release = SpoolReader.release

    def release(self, paths):
        if loads["n"] == 2 and point == "committed":
            die()
        if loads["n"] == 2 and point == "releasing":
            real_release(self, paths[: max(1, len(paths) // 2)])
            die()
        return real_release(self, paths)

    SpoolReader.release = release
    pipeline.load(Settings.from_env())
    print("the load finished without reaching the crash point", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1])
