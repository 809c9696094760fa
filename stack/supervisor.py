"""Starts, checks and stops the local engines in dependency order: PostgreSQL, Kafka broker, Kafka Connect.

``up`` is idempotent (engines of ours that already run and answer are left alone) and all-or-nothing (when an engine
fails to start, the engines this call started are stopped again). ``down`` is idempotent and leaves no process of
ours behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from stack.connect import ConnectWorker
from stack.engine import Engine, EngineStatus, State
from stack.errors import PortInUseError, StackError
from stack.kafka import KafkaBroker
from stack.postgres import PostgresCluster
from stack.process import failure, group_members, pid_alive, read_pid, wait_until
from stack.settings import StackSettings

#: Start order; ``down`` stops in reverse. Connect needs the broker; nothing needs PostgreSQL at start.
ENGINE_TYPES: tuple[type[Engine], ...] = (PostgresCluster, KafkaBroker, ConnectWorker)


@dataclass(frozen=True)
class StartResult:
    """Outcome of ``up`` for one engine: ``seconds`` is the wall time spent on it."""

    name: str
    label: str
    pid: int
    already_running: bool
    seconds: float


class UpReporter(Protocol):
    """Progress callbacks of :meth:`Supervisor.up` (the CLI shows a spinner per engine)."""

    def starting(self, engine: Engine) -> None:
        """``engine`` is about to be started (or waited for)."""

    def done(self, result: StartResult) -> None:
        """``engine`` is up."""


class DownReporter(Protocol):
    """Progress callbacks of :meth:`Supervisor.down`."""

    def stopping(self, engine: Engine) -> None:
        """``engine`` is about to be stopped (it may not be running)."""

    def stopped(self, engine: Engine, was_running: bool, seconds: float) -> None:
        """``engine`` is stopped; ``was_running`` says whether a process was actually stopped."""


class Supervisor:
    """The set of local engines built from one :class:`StackSettings`."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.engines: list[Engine] = [engine_type(settings) for engine_type in ENGINE_TYPES]

    def engine(self, name: str) -> Engine:
        """The engine called ``name`` (``postgres``, ``kafka`` or ``connect``).

        Raises:
            KeyError: unknown name.
        """
        for engine in self.engines:
            if engine.name == name:
                return engine
        raise KeyError(name)

    def status(self) -> list[EngineStatus]:
        """State of every engine, in start order."""
        return [engine.status() for engine in self.engines]

    def pid_file_pids(self) -> dict[str, int]:
        """Pids written in the engines' pid files (``<home>/run/<engine>.pid``), alive or not; engines without a
        pid file are left out."""
        pids = {engine.name: read_pid(engine.pid_path) for engine in self.engines}
        return {name: pid for name, pid in pids.items() if pid is not None}

    @staticmethod
    def leftovers(pids: Mapping[str, int]) -> list[str]:
        """Which of ``pids`` (engine name -> process group leader) still run, or left processes in their group
        (e.g. PostgreSQL's workers). Empty when everything is gone."""
        left: list[str] = []
        for name, pid in pids.items():
            members = sorted(set(group_members(pid)) | ({pid} if pid_alive(pid) else set()))
            if members:
                left.append(f"{name}: pids {', '.join(map(str, members))}")
        return left

    def _preflight(self, engines: Sequence[Engine]) -> None:
        """Check prerequisites and ports of the engines about to start, before starting any of them.

        Raises:
            StackError: a prerequisite is missing, or ports are in use (one line per port).
        """
        for engine in engines:
            engine.check_prerequisites()
        busy: list[str] = []
        for engine in engines:
            try:
                engine.check_ports()
            except PortInUseError as exc:
                busy.append(str(exc))
        if busy:
            raise StackError("\n".join(busy))

    def up(self, reporter: UpReporter | None = None) -> list[StartResult]:
        """Bring every engine up; already running engines are kept (same pid).

        Returns:
            One :class:`StartResult` per engine, in start order.

        Raises:
            StackError: an engine could not start (the ones started by this call are stopped again), a port is in
                use, or a prerequisite is missing.
        """
        results: dict[str, StartResult] = {}
        reported: set[str] = set()  # engines whose progress was already reported while waiting for them
        to_start: list[Engine] = []
        for engine in self.engines:
            current = engine.status()
            if current.state is State.STOPPED or current.pid is None:
                engine.clear_pid_file()
                to_start.append(engine)
            elif current.state is State.RUNNING:
                results[engine.name] = StartResult(engine.name, engine.label, current.pid, True, 0.0)
            else:
                # Ours, alive, not answering: maybe still starting (another `up`). Give it the start timeout.
                results[engine.name] = self._await_running(engine, current.pid, reporter)
                reported.add(engine.name)

        self._preflight(to_start)

        started: list[Engine] = []
        for engine in self.engines:
            if engine not in to_start:
                if reporter is not None and engine.name not in reported:
                    reporter.done(results[engine.name])
                continue
            if reporter is not None:
                reporter.starting(engine)
            began = time.monotonic()
            try:
                pid = engine.start()
            except BaseException:
                # All or nothing: stop what this call started, including the half-started engine.
                for engine_started in [engine, *reversed(started)]:
                    with contextlib.suppress(StackError):
                        engine_started.stop()
                raise
            started.append(engine)
            results[engine.name] = StartResult(engine.name, engine.label, pid, False, time.monotonic() - began)
            if reporter is not None:
                reporter.done(results[engine.name])
        return [results[engine.name] for engine in self.engines]

    def _await_running(self, engine: Engine, pid: int, reporter: UpReporter | None) -> StartResult:
        """Wait for an engine of ours that is alive but not (yet) answering."""
        if reporter is not None:
            reporter.starting(engine)
        began = time.monotonic()
        try:
            wait_until(
                engine.is_ready,
                timeout_s=self.settings.start_timeout_s,
                what=f"{engine.label} (pid {pid}, already running)",
                log_path=engine.log_path,
                alive=lambda: pid_alive(pid),
            )
        except StackError as exc:
            raise failure(
                f"{engine.label} (pid {pid}) runs but does not answer; run `coach stack down` and retry",
                engine.log_path,
            ) from exc
        result = StartResult(engine.name, engine.label, pid, True, time.monotonic() - began)
        if reporter is not None:
            reporter.done(result)
        return result

    def down(self, reporter: DownReporter | None = None) -> list[str]:
        """Stop every engine in reverse start order; idempotent.

        Returns:
            Names of the engines that were running and have been stopped.

        Raises:
            StackError: some engine could not be stopped (the others are still stopped).
        """
        stopped: list[str] = []
        errors: list[str] = []
        for engine in reversed(self.engines):
            if reporter is not None:
                reporter.stopping(engine)
            began = time.monotonic()
            try:
                was_running = engine.stop()
            except StackError as exc:
                errors.append(str(exc))
                continue
            if was_running:
                stopped.append(engine.name)
            if reporter is not None:
                reporter.stopped(engine, was_running, time.monotonic() - began)
        if errors:
            raise StackError("\n".join(errors))
        return stopped
