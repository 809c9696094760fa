"""``coach stack up|down|status|broker``: the local engines (Kafka, Kafka Connect + Debezium, PostgreSQL).

Settings come from ``COACH_*`` environment variables (see :class:`stack.settings.StackSettings`). Exit codes: 0 on
success; 1 when an engine fails to start or stop, or (``status``) when any engine is not running.

``up --brokers 3`` starts a three-node KRaft cluster instead of one broker (node ``n`` listens on
``COACH_KAFKA_PORT + 2(n-1)``, its controller on ``COACH_KAFKA_CONTROLLER_PORT + 2(n-1)``); the count is remembered
under ``COACH_HOME``, so later ``up``/``status``/``down`` need no flag. The platform then needs
``COACH_KAFKA_BOOTSTRAP`` (printed by ``up``) and ``COACH_KAFKA_REPLICATION=3``. ``broker kill N`` SIGKILLs node N
(a crash, like ``kill -9``) and ``broker start N`` brings it back alone (fault drills).

``compose-env`` writes the ``.env`` of ``docker-compose.yml`` (random passwords, mode 0600, never overwritten; see
:mod:`stack.compose_env`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.status import Status
from rich.table import Table
from rich.text import Text

from stack.compose_env import DEFAULT_ENV_PATH, write_compose_env
from stack.engine import Engine, EngineStatus, State
from stack.errors import StackError
from stack.settings import MAX_BROKERS, StackSettings
from stack.supervisor import StartResult, Supervisor

app = typer.Typer(
    no_args_is_help=True,
    help="Start, stop and inspect the local engines: Kafka (KRaft), Kafka Connect with Debezium, PostgreSQL.",
)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

#: Extra sections of ``status`` registered by packages above the stack (e.g. the CDC connector and slot lag, which
#: the ``coach`` CLI adds): each returns a renderable and whether its part is healthy. Keeps ``stack`` free of
#: imports from the components.
STATUS_SECTIONS: list[Callable[[StackSettings], tuple[RenderableType, bool]]] = []

_STATE_STYLE = {State.RUNNING: "green", State.UNHEALTHY: "yellow", State.STOPPED: "red"}


def _fail(error: StackError) -> typer.Exit:
    err_console.print(Text("error: ", style="bold red") + Text(str(error)))
    return typer.Exit(code=1)


def _settings() -> StackSettings:
    """Settings from the environment; an invalid ``COACH_*`` value exits with code 1 and a one-line reason each."""
    try:
        return StackSettings()
    except ValidationError as exc:
        reasons = "; ".join(
            f"COACH_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}" for error in exc.errors()
        )
        raise _fail(StackError(f"invalid setting: {reasons}")) from None


def _status_table(statuses: list[EngineStatus]) -> Table:
    table = Table(title="coach stack", title_justify="left")
    table.add_column("engine")
    table.add_column("pid", justify="right")
    table.add_column("port", justify="right")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    for st in statuses:
        table.add_row(
            st.label,
            "-" if st.pid is None else str(st.pid),
            str(st.port),
            Text(st.state.value, style=_STATE_STYLE[st.state]),
            Text(st.detail),
        )
    return table


class _ConsoleUpReporter:
    """Spinner while an engine starts, one line when it is up."""

    def __init__(self) -> None:
        self._status: Status | None = None

    def starting(self, engine: Engine) -> None:
        self._status = console.status(f"starting {engine.label} (log: {engine.log_path})…")
        self._status.start()

    def done(self, result: StartResult) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        how = "already running" if result.already_running else f"started in {result.seconds:.1f} s"
        console.print(Text("✓ ", style="green") + Text(f"{result.label}: {how} (pid {result.pid})"))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


class _ConsoleDownReporter:
    def stopping(self, engine: Engine) -> None:
        pass

    def stopped(self, engine: Engine, was_running: bool, seconds: float) -> None:
        how = f"stopped in {seconds:.1f} s" if was_running else "not running"
        console.print(Text("✓ ", style="green") + Text(f"{engine.label}: {how}"))


@app.command()
def up(
    brokers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_BROKERS,
            help="Kafka nodes (broker + KRaft controller each); 3 gives replication 3 and min.insync.replicas=2. "
            "Default: the count remembered under COACH_HOME, else 1.",
        ),
    ] = None,
) -> None:
    """Start PostgreSQL, the Kafka broker(s) and Kafka Connect (engines already running are kept)."""
    settings = _settings()
    supervisor = Supervisor(settings, brokers)
    reporter = _ConsoleUpReporter()
    try:
        supervisor.up(reporter)
    except StackError as exc:
        raise _fail(exc) from None
    finally:
        reporter.close()
    console.print(_status_table(supervisor.status()))
    console.print(
        Text(
            f"Kafka bootstrap servers: {supervisor.bootstrap_servers}\n"
            f"Kafka Connect REST:      {settings.connect_url}\n"
            f"PostgreSQL DSN:          {settings.pg_dsn}\n"
            f"State and logs:          {settings.home}"
        )
    )
    if supervisor.brokers > 1:
        console.print(
            Text(
                f"Platform settings:       COACH_KAFKA_BOOTSTRAP={supervisor.bootstrap_servers} "
                f"COACH_KAFKA_REPLICATION={supervisor.replication}"
            )
        )


@app.command()
def down() -> None:
    """Stop Kafka Connect, the Kafka broker and PostgreSQL (harmless when already stopped)."""
    supervisor = Supervisor(_settings())
    try:
        supervisor.down(_ConsoleDownReporter())
    except StackError as exc:
        raise _fail(exc) from None


@app.command()
def status() -> None:
    """Show each engine's pid, port and state; exit code 1 when any engine is not running."""
    settings = _settings()
    statuses = Supervisor(settings).status()
    console.print(_status_table(statuses))
    healthy = all(st.running for st in statuses)
    if healthy:
        for section in STATUS_SECTIONS:
            renderable, ok = section(settings)
            console.print(renderable)
            healthy = healthy and ok
    if not healthy:
        raise typer.Exit(code=1)


broker_app = typer.Typer(
    no_args_is_help=True,
    help="Crash or start one Kafka node of the local cluster (fault drills): `broker kill 2`, `broker start 2`.",
)
app.add_typer(broker_app, name="broker")

_NODE = typer.Argument(min=1, max=MAX_BROKERS, help="Node id, 1-based (`status` lists them).")


@broker_app.command("kill")
def broker_kill(node: Annotated[int, _NODE]) -> None:
    """SIGKILL Kafka node NODE and its process group (no controlled shutdown, like `kill -9`).

    Exit code 0 also when it was not running (says so); 1 for an unknown node.
    """
    supervisor = Supervisor(_settings())
    try:
        pid = supervisor.kill_broker(node)
    except StackError as exc:
        raise _fail(exc) from None
    label = supervisor.broker(node).label
    how = "was not running" if pid is None else f"killed (pid {pid}, SIGKILL)"
    console.print(Text("✓ ", style="green") + Text(f"{label}: {how}"))


@broker_app.command("start")
def broker_start(node: Annotated[int, _NODE]) -> None:
    """Start Kafka node NODE alone and wait until it is registered with the cluster (needs a controller quorum).

    Exit code 1 when it does not become ready (its log tail is printed) or NODE is unknown.
    """
    supervisor = Supervisor(_settings())
    try:
        result = supervisor.start_broker(node)
    except StackError as exc:
        raise _fail(exc) from None
    how = "already running" if result.already_running else f"started in {result.seconds:.1f} s"
    console.print(Text("✓ ", style="green") + Text(f"{result.label}: {how} (pid {result.pid})"))


@app.command("compose-env")
def compose_env(
    path: Annotated[
        Path,
        typer.Option("--path", help="The dotenv file Docker Compose reads (default: .env next to docker-compose.yml)."),
    ] = DEFAULT_ENV_PATH,
) -> None:
    """Write the passwords docker-compose.yml requires into a .env (random, mode 0600); existing values are kept.

    Exit code 1 when the file cannot be written.
    """
    try:
        result = write_compose_env(path)
    except OSError as exc:
        raise _fail(StackError(f"could not write {path}: {exc}")) from None
    if result.created:
        how = f"created with {len(result.added)} random passwords"
    elif result.added:
        how = f"kept {', '.join(result.kept) or 'nothing'}; added {', '.join(result.added)}"
    else:
        how = "already complete, left unchanged"
    console.print(Text("✓ ", style="green") + Text(f"{result.path}: {how} (mode 0600)"))
