"""Running the receiver as a process of its own: the demo, the tests and the benchmarks use it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(base_url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until the receiver answers `/readyz` with 200; raises if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the receiver at {base_url} was not ready within {timeout:.0f}s")


def start_receiver(
    env: dict[str, str], port: int, extra: list[str] | None = None, log=subprocess.DEVNULL
) -> subprocess.Popen:
    """`serve` in its own process group, so a test can kill the master and its workers at once."""
    return subprocess.Popen(
        [sys.executable, "-m", "loader.cli", "serve", "--port", str(port), *(extra or [])],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (gunicorn finishes requests in flight and seals the spool), then wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
