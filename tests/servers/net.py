"""Loopback port helpers shared by the server fixtures: pick a free port, wait
until a server accepts connections, wait until it stopped listening."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

__all__ = ["free_port", "port_open", "wait_closed", "wait_open"]

LOOPBACK = "127.0.0.1"
#: how long a server may take to start or stop, in seconds
WAIT_S = 15.0
#: pause between two probes, in seconds
POLL_S = 0.02


def free_port() -> int:
    """A TCP port nothing listens on right now (it may be taken meanwhile:
    fixtures retry their start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _deadline_loop(done: Callable[[], bool], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(POLL_S)
    return done()


def wait_open(
    ports: list[int],
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Callable[[], str] = lambda: "",
    wait_s: float = WAIT_S,
) -> None:
    """Wait until every port accepts connections.

    Raises:
        RuntimeError: ``process`` exited, or the time ran out (with ``log()``).
    """

    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode} while starting:\n{log()}"
            )
        return all(port_open(p) for p in ports)

    if not _deadline_loop(ready, wait_s):
        raise RuntimeError(f"{what} did not listen on {ports} in {wait_s} s:\n{log()}")


def wait_closed(ports: list[int], wait_s: float = WAIT_S) -> bool:
    """Wait until no port accepts connections; whether that happened in time.

    "Port closed" is the stop signal, not the pid: a daemon's pid can linger as
    a zombie where PID 1 reaps slowly (real-servers.md §9).
    """
    return _deadline_loop(lambda: not any(port_open(p) for p in ports), wait_s)
