"""The ``coach`` command line (Typer): the top of the dependency graph.

Sub-commands: ``stack`` (local engines), ``migrate``, ``schemas``. See the README for the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from api.cli import serve as serve_api_command
from feedback.cli import app as feedback_app
from feedback.cli import worker as feedback_worker_command
from flows.cli import replay_app
from grafana.cli import app as grafana_app
from projections.cli import asyncapi as asyncapi_command
from projections.cli import cdc_app, learners_app
from projections.cli import projector as projector_worker_command
from runtime.redaction import redact_dsn
from stack.cli import STATUS_SECTIONS
from stack.cli import app as stack_app
from transcription.cli import transcription as transcription_worker_command

app = typer.Typer(no_args_is_help=True, help="Speech Coach analytics platform.")
console = Console(width=None if sys.stdout.isatty() else 120)


@app.callback()
def _pin_state_paths() -> None:
    """Make every state path of the environment absolute before any command (and any thread) starts."""
    from runtime.settings import pin_state_paths

    pin_state_paths()


def _run_services(services: object) -> int:
    """Run a :class:`coach.services.ServiceSet` in the foreground until SIGINT/SIGTERM or a failure.

    Prints when every service is ready; on a failure, one line per failed service (name and cause) and exit
    status 1; 1 also when a service does not stop in time; 0 after a clean stop."""
    import signal

    from coach.services import ServiceSet, failure_line

    assert isinstance(services, ServiceSet)
    signal.signal(signal.SIGTERM, lambda *_: services.stop.set())
    signal.signal(signal.SIGINT, lambda *_: services.stop.set())
    services.start()
    console.print(f"starting: {', '.join(s.name for s in services.services)} (Ctrl-C stops)")
    announced = False
    while not services.stop.is_set() and not services.failed():
        if not announced and services.ready():
            console.print("ready: every service is up")
            announced = True
        services.stop.wait(0.2)
    failed = services.failed()
    still = services.shutdown()
    for service in failed:
        console.print(f"[red]coach: {failure_line(service)}[/red]", soft_wrap=True)
    if still:
        console.print(f"[yellow]did not stop in time: {', '.join(still)}[/yellow]")
    return 1 if failed or still else 0


app.add_typer(stack_app, name="stack", help="Start, stop and inspect the local engines.")


worker_app = typer.Typer(no_args_is_help=True, help="Run one service's consumer-group members in the foreground.")
worker_app.command("transcription")(transcription_worker_command)
worker_app.command("feedback")(feedback_worker_command)
worker_app.command("projector")(projector_worker_command)


@worker_app.command("flows")
def flows_worker() -> None:
    """The Bytewax dataflows (metrics, observability) and the consumer-lag sampler; Ctrl-C stops them."""

    from coach.services import ServiceSet, flow_services
    from runtime.logs import configure_logging

    configure_logging("flows")
    raise typer.Exit(_run_services(ServiceSet(flow_services())))


app.add_typer(learners_app, name="learners")
app.add_typer(grafana_app, name="grafana")
app.add_typer(replay_app, name="replay")
app.add_typer(cdc_app, name="cdc")
app.command("asyncapi")(asyncapi_command)


def _cdc_status_section(_settings: object) -> tuple[object, bool]:
    """``coach stack status``: the Debezium connector's state and the replication slot's lag."""
    from rich.table import Table

    from projections.debezium import cdc_status
    from runtime.settings import PlatformSettings

    info = cdc_status(PlatformSettings())
    table = Table(title="change data capture", title_justify="left")
    for column in ("connector", "state", "tasks", "slot", "slot active", "slot lag (bytes)", "error"):
        table.add_column(column)
    tasks = ", ".join(str(t) for t in info.get("tasks", []) or []) or "-"
    table.add_row(
        str(info.get("connector", "-")), str(info.get("state", "-")), tasks, str(info.get("slot", "-")),
        str(info.get("slot_active", "-")), str(info.get("slot_lag_bytes", "-")), str(info.get("error") or ""),
    )  # fmt: skip
    # A stack without `coach migrate` has no connector yet: that is not a failure of the stack.
    return table, info.get("state") in ("RUNNING", "NOT_REGISTERED")


STATUS_SECTIONS.append(_cdc_status_section)
app.add_typer(worker_app, name="worker")
app.add_typer(feedback_app, name="feedback", help="Coaching feedback: worker and one-off generation.")

keys_app = typer.Typer(no_args_is_help=True, help="API keys (bearer tokens), stored hashed in PostgreSQL.")
app.add_typer(keys_app, name="keys")

schemas_app = typer.Typer(no_args_is_help=True, help="Event contracts: JSON Schema export and checks.")
app.add_typer(schemas_app, name="schemas")


@app.command()
def migrate(
    topics: Annotated[bool, typer.Option(help="Create the Kafka topics")] = True,
    postgres: Annotated[bool, typer.Option(help="Apply PostgreSQL migrations")] = True,
    clickhouse: Annotated[bool, typer.Option(help="Apply ClickHouse migrations")] = True,
    cdc: Annotated[bool, typer.Option(help="Register the Debezium connector (create or update)")] = True,
) -> None:
    """Create topics, apply PostgreSQL and ClickHouse migrations, register the Debezium connector (idempotent)."""
    from coach.migrations import run_migrations

    ok = run_migrations(console, topics=topics, postgres=postgres, clickhouse=clickhouse, cdc=cdc)
    raise typer.Exit(0 if ok else 1)


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="User id the key acts as")],
    role: Annotated[str, typer.Option(help="learner | coach | admin")] = "learner",
) -> None:
    """Create an API key and print its bearer token (shown once)."""
    import psycopg

    from runtime.principals import ROLES, create_api_key
    from runtime.settings import PlatformSettings

    if role not in ROLES:
        console.print(f"[red]--role must be one of {', '.join(ROLES)}[/red]")
        raise typer.Exit(2)
    settings = PlatformSettings()
    try:
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            token = create_api_key(conn, user, role)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        where, why = redact_dsn(settings.postgres_dsn), redact_dsn(str(exc))
        console.print(f"[red]PostgreSQL unreachable at {where}[/red]: run `coach stack up` ({why})")
        raise typer.Exit(1) from exc
    except psycopg.errors.UndefinedTable as exc:
        console.print("[red]api_keys table missing[/red]: run `coach migrate` first")
        raise typer.Exit(1) from exc
    print(token)


@app.command()
def run() -> None:
    """Every service of the local mode in the foreground (APIs, workers, projector, dataflows); Ctrl-C stops them.

    Exits 1 with one line naming the service and its cause when one fails (the others are stopped first)."""

    from coach.services import ServiceSet, local_services
    from runtime.logs import configure_logging

    configure_logging("coach-run")
    raise typer.Exit(_run_services(ServiceSet(local_services())))


serve_app = typer.Typer(no_args_is_help=True, help="Serve one HTTP API in the foreground (containers run one each).")
app.add_typer(serve_app, name="serve")


serve_app.command("api")(serve_api_command)


@serve_app.command("ingestion")
def serve_ingestion() -> None:
    """The ingestion API (POST /v1/submissions) on COACH_INGESTION_HOST:COACH_INGESTION_PORT, with the connection,
    request, header and body limits of COACH_INGESTION_* (runtime.http_server); Ctrl-C or SIGTERM stops it."""
    from ingestion.app import create_app
    from ingestion.settings import IngestionSettings
    from runtime.http_server import serve_uvicorn

    settings = IngestionSettings()
    serve_uvicorn(create_app(settings=settings), settings.host, settings.port, settings.http_limits())


@app.command()
def demo(
    keep_stack: Annotated[bool, typer.Option(help="Leave the local stack running afterwards")] = False,
) -> None:
    """Run the whole pipeline on bundled real and synthesized speech and print each learner's progress."""
    import logging

    from coach.demo import DemoFailed, run_demo
    from runtime.logs import configure_logging

    configure_logging("demo", level=logging.WARNING)
    try:
        run_demo(console, keep_stack=keep_stack)
    except DemoFailed as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command("settings")
def settings_reference(
    write_readme: Annotated[bool, typer.Option(help="Rewrite the table inside README.md")] = False,
) -> None:
    """Print every COACH_* environment variable as a Markdown table (the README's settings table)."""
    from coach.readme_table import README, readme_with_table
    from coach.settings_table import render_markdown

    if write_readme:
        README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
        console.print(f"updated {README}")
        return
    print(render_markdown(), end="")


@schemas_app.command("export")
def schemas_export(
    target: Annotated[Path | None, typer.Option(help="Directory (default schemas/json)")] = None,
) -> None:
    """Write the JSON Schema file of every contract."""
    from schemas.export import JSON_DIR, export_schemas

    for path in export_schemas(target or JSON_DIR):
        console.print(f"wrote {path}")


@schemas_app.command("check")
def schemas_check() -> None:
    """Fail when a contract changed incompatibly against its checked-in JSON Schema."""
    from schemas.compatibility import check_against_published

    problems = check_against_published()
    for name, items in problems.items():
        for item in items:
            console.print(f"[red]{name}[/red]: {item}")
    if problems:
        raise typer.Exit(1)
    console.print("contracts compatible with the published schemas")


if __name__ == "__main__":  # pragma: no cover
    app()
