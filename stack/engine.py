"""The contract every local engine (Kafka broker, Kafka Connect, PostgreSQL) implements for the supervisor."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from stack.errors import PortInUseError, StackError
from stack.process import cmdline_contains, pid_alive, port_in_use, read_pid, remove_file, terminate_group, wait_until
from stack.settings import StackSettings


class State(StrEnum):
    """State of one engine as seen by ``coach stack status``."""

    RUNNING = "running"  # our process is alive and its readiness probe answers
    UNHEALTHY = "unhealthy"  # our process is alive but does not answer (starting, stuck or shutting down)
    STOPPED = "stopped"  # no process of ours


@dataclass(frozen=True)
class PortClaim:
    """A TCP port an engine listens on and the environment variable that changes it."""

    port: int
    env_var: str


@dataclass(frozen=True)
class EngineStatus:
    """Snapshot of one engine: ``pid`` is ``None`` when stopped; ``port`` is its client-facing port."""

    name: str
    label: str
    pid: int | None
    port: int
    state: State
    detail: str

    @property
    def running(self) -> bool:
        """Whether the engine is up and ready."""
        return self.state is State.RUNNING


class Engine(ABC):
    """One background engine with a pid file ``<home>/run/<name>.pid`` and a log ``<home>/logs/<name>.log``."""

    #: Short stable name used for file names and the CLI, e.g. ``"kafka"``.
    name: ClassVar[str]
    #: Human name used in messages, e.g. ``"Kafka broker"``.
    label: ClassVar[str]

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings

    @property
    def pid_path(self) -> Path:
        """Pid file of the engine's main process."""
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        """Log file of the engine (stdout and stderr of its processes)."""
        return self.settings.logs_dir / f"{self.name}.log"

    @property
    @abstractmethod
    def port(self) -> int:
        """Client-facing TCP port shown by ``status``."""

    @abstractmethod
    def port_claims(self) -> list[PortClaim]:
        """Every TCP port the engine will listen on."""

    @abstractmethod
    def pid(self) -> int | None:
        """Pid of our running engine process, or ``None`` (dead, missing or recycled pid)."""

    @abstractmethod
    def is_ready(self) -> bool:
        """Readiness probe: the engine answers its clients. Never raises."""

    @abstractmethod
    def check_prerequisites(self) -> None:
        """Check what the engine needs before starting (binaries, jars).

        Raises:
            StackError: something is missing; the message says how to get it.
        """

    @abstractmethod
    def start(self) -> int:
        """Prepare (first-start initialisation, config files), launch and wait until ready. Returns the pid.

        Precondition: the engine is stopped and its ports are free.

        Raises:
            StackError: with the last lines of the engine's log when it fails or is not ready in time.
        """

    @abstractmethod
    def stop(self) -> bool:
        """Stop the engine if it runs; idempotent. Returns whether a process was stopped.

        Raises:
            StackError: the process could not be stopped.
        """

    def detail(self) -> str:
        """Extra information shown by ``status`` for a running engine."""
        return str(self.log_path)

    def check_ports(self) -> None:
        """Raise :class:`PortInUseError` for the first port of this engine that another process holds."""
        for claim in self.port_claims():
            if port_in_use(claim.port):
                raise PortInUseError(claim.port, self.label, claim.env_var)

    def status(self) -> EngineStatus:
        """Current state of the engine (cheap: one liveness check and one readiness probe)."""
        pid = self.pid()
        if pid is None:
            stale = " (stale pid file)" if self.pid_path.exists() else ""
            return EngineStatus(self.name, self.label, None, self.port, State.STOPPED, f"not running{stale}")
        if self.is_ready():
            return EngineStatus(self.name, self.label, pid, self.port, State.RUNNING, self.detail())
        return EngineStatus(
            self.name, self.label, pid, self.port, State.UNHEALTHY, f"process alive, not answering; see {self.log_path}"
        )

    def clear_pid_file(self) -> None:
        """Remove the pid file (after a stop, or when it is stale)."""
        remove_file(self.pid_path)

    def pid_running(self, *cmdline: str) -> int | None:
        """The pid in the pid file when that process is alive and its command line contains every one of
        ``cmdline`` (so a recycled pid is never taken for ours), else ``None``."""
        pid = read_pid(self.pid_path)
        if pid is None or not pid_alive(pid) or not cmdline_contains(pid, *cmdline):
            return None
        return pid

    def wait_ready(self, pid: int, what: str, check: Callable[[], bool] | None = None) -> None:
        """Wait up to ``start_timeout_s`` until ``check`` (default: :meth:`is_ready`) holds for the engine's process
        ``pid``; ``what`` names it in the error.

        Raises:
            StackError: ``pid`` exited or the check did not hold in time (with the tail of the engine's log).
        """
        wait_until(
            check or self.is_ready,
            timeout_s=self.settings.start_timeout_s,
            what=what,
            log_path=self.log_path,
            alive=lambda: pid_alive(pid),
        )

    def stop_group(self) -> bool:
        """SIGTERM the process group of the engine's main process, SIGKILL after ``stop_timeout_s``; the pid file
        goes either way. Returns whether a process was stopped.

        Raises:
            StackError: the process group survived SIGKILL.
        """
        pid = self.pid()
        if pid is None:
            self.clear_pid_file()
            return False
        try:
            terminate_group(pid, timeout_s=self.settings.stop_timeout_s)
        except StackError as exc:
            raise StackError(f"could not stop {self.label} (pid {pid}): {exc}") from exc
        self.clear_pid_file()
        return True


def require_java(java_bin: str) -> str:
    """Absolute path of the Java executable.

    Raises:
        StackError: not found.
    """
    found = shutil.which(java_bin)
    if found is None:
        raise StackError(f"Java not found ({java_bin!r}); install a JDK 17+ or set COACH_JAVA_BIN")
    return found


def require_jars(directory: Path, pattern: str, what: str) -> None:
    """Check that ``directory`` holds a jar matching ``pattern``.

    Raises:
        StackError: the jars are missing (bootstrap was not run).
    """
    if not any(directory.glob(pattern)):
        raise StackError(
            f"{what} jars not found in {directory}; run `bash stack/bootstrap.sh` (resolves them from Maven "
            "Central) or set COACH_JARS_DIR"
        )
