"""Process plumbing for the local engines: pid files, liveness, process groups, ports, log tails, readiness waits.

Linux-only where it matters: liveness and command lines are read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from stack.errors import StackError
from stack.settings import LOOPBACK

#: Lines of an engine's log quoted in error messages.
LOG_TAIL_LINES = 30


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def read_pid(path: Path) -> int | None:
    """Pid stored in ``path`` (first line), or ``None`` when the file is missing or malformed."""
    try:
        first = path.read_text(encoding="ascii").split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() else None


def write_pid(path: Path, pid: int) -> None:
    """Write ``pid`` to ``path`` atomically (creating parent directories)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{pid}\n", encoding="ascii")
    tmp.replace(path)


def remove_file(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited child not yet reaped counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (PostgreSQL run as an unprivileged user while we are not root)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc: trust kill(0)
    # Format: "pid (comm) state ..."; comm may contain spaces and parentheses, so split at the last ")".
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    """Collect an exited child of ours so it does not linger as a zombie (no-op for non-children)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def cmdline(pid: int) -> list[str]:
    """Command line of ``pid`` (empty when unknown or the process is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def cmdline_contains(pid: int, *markers: str) -> bool:
    """Whether every marker occurs in ``pid``'s command line: guards against a recycled pid in a stale pid file."""
    line = " ".join(cmdline(pid))
    return bool(line) and all(marker in line for marker in markers)


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``, read from ``/proc``."""
    members: list[int] = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields: state, ppid, pgrp, ...
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(stat_path.parent.name))
    return members


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether a TCP listener (or any socket) already holds ``host:port``, tested by trying to bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: ignore sockets in TIME_WAIT left by a process that just exited; a listener still fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a text file ('' when it does not exist); reads at most the last 256 KiB."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def log_header(log_path: Path, text: str) -> None:
    """Append a ``=== <UTC time> <text> ===`` marker to an engine log, so a log tail shows where a start began."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(f"=== {utc_now().isoformat(timespec='seconds')} {text} ===\n")


def failure(message: str, log_path: Path) -> StackError:
    """A :class:`StackError` with ``message`` followed by the last lines of ``log_path``."""
    quoted = tail(log_path)
    if quoted:
        message = f"{message}\n--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{quoted}"
    else:
        message = f"{message} (log: {log_path})"
    return StackError(message)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in the background, in its own session and process group, stdout+stderr appended to ``log_path``.

    Returns the pid, which is also the process group id. The child outlives the calling process.

    Raises:
        StackError: the executable could not be started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(  # argv built by the supervisor, no shell
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"could not start {argv[0]}: {exc}") from exc
    return proc.pid


def run_python(*args: str, what: str, cwd: Path | None = None, timeout_s: float | None = None) -> str:
    """Run this interpreter with ``args`` (``python <args>``) to completion, its output captured; returns its stdout.

    Raises:
        RuntimeError: it exited non-zero; the message names ``what`` and quotes the exit code and the last 2,000
            characters of its stdout and of its stderr.
        subprocess.TimeoutExpired: it ran longer than ``timeout_s`` seconds (then it is killed).
    """
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    log_path: Path,
    alive: Callable[[], bool] | None = None,
    interval_s: float = 0.5,
) -> None:
    """Poll ``check`` until it returns True.

    Args:
        check: readiness probe; exceptions count as "not ready".
        timeout_s: seconds to wait.
        what: human description for the error, e.g. ``"Kafka broker on 127.0.0.1:9092"``.
        log_path: the engine's log, quoted on failure.
        alive: optional liveness probe; when it turns False the wait fails at once.
        interval_s: seconds between probes.

    Raises:
        StackError: the process died, or ``timeout_s`` elapsed; with the last lines of the log.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except Exception:  # a probe failing just means "not ready yet"
            pass
        if alive is not None and not alive():
            raise failure(f"{what} exited during start-up", log_path)
        if time.monotonic() >= deadline:
            raise failure(f"{what} was not ready after {timeout_s:.0f} s", log_path)
        time.sleep(interval_s)


def terminate_group(pid: int, *, timeout_s: float) -> None:
    """Stop the process group led by ``pid``: SIGTERM, wait up to ``timeout_s``, then SIGKILL and wait again.

    Raises:
        StackError: the process survived SIGKILL (should not happen).
    """

    def signal_group(sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            # No process group led by pid (the process was not started as a group leader): signal it alone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    signal_group(signal.SIGTERM)
    if _wait_dead(pid, timeout_s):
        _kill_leftovers(pid)
        return
    signal_group(signal.SIGKILL)
    if not _wait_dead(pid, 10.0):
        raise StackError(f"process {pid} did not exit after SIGKILL")
    _kill_leftovers(pid)


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _kill_leftovers(pgid: int) -> None:
    """SIGKILL whatever is left in process group ``pgid`` after its leader exited (normally nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_group(pid: int, *, timeout_s: float = 10.0) -> None:
    """SIGKILL the process group led by ``pid`` at once (a crash, ``kill -9``: no shutdown hooks) and wait until
    the leader is gone.

    Raises:
        StackError: the process survived SIGKILL for ``timeout_s`` seconds (should not happen).
    """
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if not _wait_dead(pid, timeout_s):
        raise StackError(f"process {pid} did not exit after SIGKILL")
    _kill_leftovers(pid)
