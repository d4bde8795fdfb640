"""Timing one benchmark process: wall time and peak RSS through GNU time."""

from __future__ import annotations

import re
import subprocess
import time


def timed_rss(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB (GNU time), and stderr of one process, which must succeed."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB=%M", *command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    rss = int(re.search(r"MAXRSS_KB=(\d+)", result.stderr).group(1)) / 1024
    return seconds, rss, result.stderr
