"""Starts, checks and stops the local engines in dependency order: PostgreSQL, Kafka broker(s), Kafka Connect.

``up`` is idempotent (engines of ours that already run and answer are left alone) and all-or-nothing (when an engine
fails to start, the engines this call started are stopped again). ``down`` is idempotent and leaves no process of
ours behind.

Kafka is one broker by default or a local KRaft cluster (``Supervisor(settings, brokers=3)``, ``coach stack up
--brokers 3``; see :mod:`stack.kafka`). The count is remembered in ``<home>/stack.json``, so a later
``Supervisor(settings)`` (``status``, ``down``) handles every broker. The nodes of a cluster are launched together
and then awaited (a node is ready only once a controller quorum is up), and stopped together (stopping them one by
one would leave the last ones waiting for a quorum for their controlled shutdown). One node can be crashed and
brought back alone: :meth:`Supervisor.kill_broker` (SIGKILL, like ``kill -9``) and :meth:`Supervisor.start_broker`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from stack.connect import ConnectWorker
from stack.engine import Engine, EngineStatus, State
from stack.errors import PortInUseError, StackError
from stack.kafka import (
    KafkaBroker,
    cluster_replication,
    formatted_node_dirs,
    remembered_brokers,
    write_state,
)
from stack.postgres import PostgresCluster
from stack.process import failure, group_members, pid_alive, read_pid
from stack.settings import MAX_BROKERS, StackSettings

#: Start order; ``down`` stops in reverse. Connect needs the broker(s); nothing needs PostgreSQL at start.
ENGINE_TYPES: tuple[type[Engine], ...] = (PostgresCluster, KafkaBroker, ConnectWorker)


class ClusterConnectWorker(ConnectWorker):
    """The Connect worker pointed at every broker of the cluster, its internal topics replicated like the others
    (``<storage>.replication.factor`` = ``min(3, brokers)``). Identical to :class:`ConnectWorker` for one broker."""

    def __init__(self, settings: StackSettings, bootstrap_servers: str, brokers: int) -> None:
        super().__init__(settings)
        self.bootstrap_servers = bootstrap_servers
        self.brokers = brokers

    def worker_properties(self) -> str:
        """:meth:`ConnectWorker.worker_properties` with the cluster's bootstrap servers and replication."""
        replication = str(cluster_replication(self.brokers))
        overrides = {
            "bootstrap.servers": self.bootstrap_servers,
            "config.storage.replication.factor": replication,
            "offset.storage.replication.factor": replication,
            "status.storage.replication.factor": replication,
        }
        lines = []
        for line in super().worker_properties().splitlines():
            key = line.split("=", 1)[0]
            lines.append(f"{key}={overrides[key]}" if not line.startswith("#") and key in overrides else line)
        return "\n".join(lines) + "\n"


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
    """The set of local engines built from one :class:`StackSettings`.

    ``brokers``: how many Kafka nodes (1 to :data:`~stack.settings.MAX_BROKERS`); ``None`` means the count
    remembered under ``COACH_HOME`` by the last ``up``, else 1. A count that differs from the one of an already
    formatted cluster is refused by :meth:`up`.

    Raises:
        ValueError: ``brokers`` out of range.
    """

    def __init__(self, settings: StackSettings, brokers: int | None = None) -> None:
        if brokers is not None and not 1 <= brokers <= MAX_BROKERS:
            raise ValueError(f"brokers must be 1 to {MAX_BROKERS}, not {brokers}")
        self.settings = settings
        self.requested_brokers = brokers
        self.brokers: int = brokers or remembered_brokers(settings) or 1
        self.kafka_nodes: list[KafkaBroker] = [KafkaBroker(settings, i, self.brokers) for i in range(self.brokers)]
        self.engines: list[Engine] = [
            PostgresCluster(settings),
            *self.kafka_nodes,
            ClusterConnectWorker(settings, self.bootstrap_servers, self.brokers),
        ]

    @property
    def bootstrap_servers(self) -> str:
        """``bootstrap.servers`` naming every broker, e.g. ``127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096``."""
        return self.settings.cluster_bootstrap_servers(self.brokers)

    @property
    def replication(self) -> int:
        """Replication factor topics should get on this cluster (``COACH_KAFKA_REPLICATION`` of the platform)."""
        return cluster_replication(self.brokers)

    def broker(self, node_id: int) -> KafkaBroker:
        """Kafka node ``node_id`` (1-based, as in ``node.id``).

        Raises:
            StackError: no such node in this cluster.
        """
        if not 1 <= node_id <= self.brokers:
            raise StackError(f"no broker {node_id}: the Kafka cluster under {self.settings.home} has {self.brokers}")
        return self.kafka_nodes[node_id - 1]

    def kill_broker(self, node_id: int) -> int | None:
        """SIGKILL broker ``node_id`` (1-based) and its process group, like ``kill -9``: no controlled shutdown,
        the pid file stays (``status`` shows it stopped). Returns the killed pid, ``None`` if it was not running.

        Raises:
            StackError: no such broker, or it survived SIGKILL.
        """
        return self.broker(node_id).kill()

    def start_broker(self, node_id: int) -> StartResult:
        """Start broker ``node_id`` (1-based) alone, e.g. after :meth:`kill_broker`, and wait until it is ready
        (registered and unfenced: a controller quorum must be up, i.e. a majority of the nodes). A broker that
        already runs is kept.

        Raises:
            StackError: no such broker, a port is in use, or it did not become ready (its log tail included).
        """
        broker = self.broker(node_id)
        current = broker.status()
        if current.pid is not None and current.state is State.RUNNING:
            return StartResult(broker.name, broker.label, current.pid, True, 0.0)
        if current.pid is not None:
            return self._await_running(broker, current.pid, None)
        broker.clear_pid_file()
        self._preflight([broker])
        began = time.monotonic()
        try:
            pid = broker.start()
        except BaseException:
            with contextlib.suppress(StackError):
                broker.stop()
            raise
        return StartResult(broker.name, broker.label, pid, False, time.monotonic() - began)

    def engine(self, name: str) -> Engine:
        """The engine called ``name`` (``postgres``, ``kafka``, ``kafka-2``… in a cluster, or ``connect``).

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
            StackError: a prerequisite is missing, two engines of this stack would share a port, or ports are in
                use (one line per port).
        """
        owners: dict[int, str] = {}
        clashes: list[str] = []
        for engine in self.engines:
            for claim in engine.port_claims():
                if claim.port in owners:
                    clashes.append(f"port {claim.port} would be used twice: {owners[claim.port]} and {claim.env_var}")
                owners.setdefault(claim.port, claim.env_var)
        if clashes:
            raise StackError("\n".join(clashes))
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

    def _check_broker_count(self) -> None:
        """Refuse a ``brokers`` count that differs from the cluster already formatted under ``COACH_HOME``.

        Raises:
            StackError: the home holds a cluster of another size (re-formatting would drop its topics).
        """
        remembered = remembered_brokers(self.settings)
        if remembered is None or remembered == self.brokers or not formatted_node_dirs(self.settings):
            return
        dirs = ", ".join(str(d) for d in formatted_node_dirs(self.settings))
        raise StackError(
            f"{self.settings.home} holds a Kafka cluster of {remembered} broker(s), not {self.brokers}; keep "
            f"`--brokers {remembered}`, use another COACH_HOME, or run `coach stack down` and delete {dirs} and "
            f"{self.settings.state_path} (its topics are lost)"
        )

    def up(self, reporter: UpReporter | None = None) -> list[StartResult]:
        """Bring every engine up; already running engines are kept (same pid), stopped brokers of a cluster are
        started (all launched first, then awaited).

        Returns:
            One :class:`StartResult` per engine, in start order.

        Raises:
            StackError: an engine could not start (the ones started by this call are stopped again), a port is in
                use, a prerequisite is missing, or the broker count differs from the cluster under ``COACH_HOME``.
        """
        self._check_broker_count()
        results: dict[str, StartResult] = {}
        to_start: list[Engine] = []
        to_await: dict[str, int] = {}  # ours, alive, not answering: maybe still starting (another `up`)
        for engine in self.engines:
            current = engine.status()
            if current.state is State.STOPPED or current.pid is None:
                engine.clear_pid_file()
                to_start.append(engine)
            elif current.state is State.RUNNING:
                results[engine.name] = StartResult(engine.name, engine.label, current.pid, True, 0.0)
            else:
                to_await[engine.name] = current.pid

        self._preflight(to_start)
        write_state(self.settings, kafka_brokers=self.brokers)

        started: list[Engine] = []  # engines this call started (or launched), for the all-or-nothing rollback
        launched: dict[str, int] = {}  # Kafka nodes launched by this call, not yet awaited
        try:
            for engine in self.engines:
                if engine.name in to_await:
                    if isinstance(engine, KafkaBroker):
                        self._launch_brokers(to_start, started, launched)
                    results[engine.name] = self._await_running(engine, to_await[engine.name], reporter)
                    continue
                if engine not in to_start:
                    if reporter is not None:
                        reporter.done(results[engine.name])
                    continue
                if reporter is not None:
                    reporter.starting(engine)
                began = time.monotonic()
                if isinstance(engine, KafkaBroker):
                    self._launch_brokers(to_start, started, launched)
                    pid = launched.pop(engine.name)
                    engine.await_ready(pid)
                else:
                    pid = engine.start()
                    started.append(engine)
                results[engine.name] = StartResult(engine.name, engine.label, pid, False, time.monotonic() - began)
                if reporter is not None:
                    reporter.done(results[engine.name])
        except BaseException:
            # All or nothing: stop what this call started, including a half-started engine.
            half_started = [e for e in to_start if e not in started and e.pid() is not None]
            for engine_started in [*half_started, *reversed(started)]:
                with contextlib.suppress(StackError):
                    engine_started.stop()
            raise
        return [results[engine.name] for engine in self.engines]

    def _launch_brokers(self, to_start: Sequence[Engine], started: list[Engine], launched: dict[str, int]) -> None:
        """Launch every Kafka node of ``to_start`` not launched yet (once per ``up``), recording their pids."""
        for node in self.kafka_nodes:
            if node in to_start and node not in started:
                launched[node.name] = node.launch()
                started.append(node)

    def _await_running(self, engine: Engine, pid: int, reporter: UpReporter | None) -> StartResult:
        """Wait for an engine of ours that is alive but not (yet) answering."""
        if reporter is not None:
            reporter.starting(engine)
        began = time.monotonic()
        try:
            engine.wait_ready(pid, f"{engine.label} (pid {pid}, already running)")
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
        """Stop every engine in reverse start order (the Kafka nodes of a cluster together); idempotent.

        Returns:
            Names of the engines that were running and have been stopped.

        Raises:
            StackError: some engine could not be stopped (the others are still stopped).
        """
        stopped: list[str] = []
        errors: list[str] = []
        # Groups in reverse start order: Connect, then every Kafka node at once, then PostgreSQL.
        groups: list[list[Engine]] = []
        for engine in reversed(self.engines):
            if isinstance(engine, KafkaBroker) and groups and isinstance(groups[-1][0], KafkaBroker):
                groups[-1].append(engine)
            else:
                groups.append([engine])

        def stop(engine: Engine) -> tuple[Engine, bool | StackError, float]:
            began = time.monotonic()
            try:
                return engine, engine.stop(), time.monotonic() - began
            except StackError as exc:
                return engine, exc, time.monotonic() - began

        for group in groups:
            if reporter is not None:
                for engine in group:
                    reporter.stopping(engine)
            if len(group) == 1:
                outcomes = [stop(group[0])]
            else:
                with ThreadPoolExecutor(max_workers=len(group), thread_name_prefix="stop-kafka") as pool:
                    outcomes = list(pool.map(stop, group))
            for engine, outcome, seconds in outcomes:
                if isinstance(outcome, StackError):
                    errors.append(str(outcome))
                    continue
                if outcome:
                    stopped.append(engine.name)
                if reporter is not None:
                    reporter.stopped(engine, outcome, seconds)
        if errors:
            raise StackError("\n".join(errors))
        return stopped
