"""HTTP servers of the test process: a free local port, and a server loop run in a thread until the test is done."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

__all__ = ["free_port", "serving"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick; nothing holds it for the caller)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(run: Callable[[threading.Event], object], port: int, name: str) -> Iterator[int]:
    """``run(stop)`` (a server's loop, as ``coach run`` runs it) in a daemon thread of this process; yields ``port``
    once ``http://127.0.0.1:<port>/healthz`` answers 200, failing when the thread dies or 30 s pass first. On exit
    sets ``stop`` and asserts that the thread ended within 30 s. ``name`` names the server in the failures."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert thread.is_alive() and time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.1)
        yield port
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), f"{name} did not stop"
