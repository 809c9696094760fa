"""Commands of the projections component, mounted by ``coach``:

* ``coach learners upsert|show`` (:data:`learners_app`): the learner profiles the app owns;
* ``coach cdc register|status`` (:data:`cdc_app`): the Debezium connector;
* ``coach projector`` (:func:`projector`): the projector in the foreground;
* ``coach asyncapi`` (:func:`asyncapi`): write the AsyncAPI document of every topic.

Exit codes: 0 on success, 1 when an engine is unreachable or the operation failed, 2 on invalid arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from runtime.redaction import redact_dsn

__all__ = ["asyncapi", "cdc_app", "learners_app", "projector"]

console = Console()
err_console = Console(stderr=True)

learners_app = typer.Typer(no_args_is_help=True, help="Learner profiles (PostgreSQL table learners, captured by CDC).")
cdc_app = typer.Typer(no_args_is_help=True, help="Change data capture: the Debezium PostgreSQL connector.")


@learners_app.command("upsert")
def learners_upsert(
    user: Annotated[str, typer.Option("--user", help="The learner's user id")],
    display_name: Annotated[str | None, typer.Option(help="Name shown to coaches")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/Paris")] = None,
    native_language: Annotated[str | None, typer.Option(help="e.g. fr")] = None,
    target_level: Annotated[str | None, typer.Option(help="CEFR level A1…C2")] = None,
    cohort: Annotated[str | None, typer.Option(help="Cohort id")] = None,
    coach_id: Annotated[str | None, typer.Option(help="The coach's user id")] = None,
) -> None:
    """Create the learner or update the given fields (others are kept); prints the stored row as JSON."""
    import psycopg
    from pydantic import ValidationError

    from projections.learners import LearnerProfile, upsert_learner
    from runtime.settings import PlatformSettings

    try:
        profile = LearnerProfile(
            user_id=user,
            display_name=display_name,
            timezone=timezone,
            native_language=native_language,
            target_level=target_level.upper() if target_level else None,  # type: ignore[arg-type]
            cohort=cohort,
            coach_id=coach_id,
        )
    except ValidationError as exc:
        for error in exc.errors():
            err_console.print(
                f"[red]--{'-'.join(str(p) for p in error['loc']).replace('_', '-')}[/red]: {error['msg']}"
            )
        raise typer.Exit(2) from None
    settings = PlatformSettings()
    try:
        with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=5) as conn:
            row = upsert_learner(conn, profile)
    except psycopg.errors.UndefinedTable as exc:
        err_console.print("[red]learners table missing[/red]: run `coach migrate` first")
        raise typer.Exit(1) from exc
    except psycopg.OperationalError as exc:
        where, why = redact_dsn(settings.postgres_dsn), redact_dsn(str(exc))
        err_console.print(f"[red]PostgreSQL unreachable at {where}[/red]: run `coach stack up` ({why})")
        raise typer.Exit(1) from exc
    print(json.dumps(row, default=str))


@learners_app.command("show")
def learners_show(user: Annotated[str, typer.Option("--user", help="The learner's user id")]) -> None:
    """Print the learner's row as JSON (exit 1 when unknown)."""
    import psycopg

    from projections.learners import get_learner
    from runtime.settings import PlatformSettings

    settings = PlatformSettings()
    try:
        with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=5) as conn:
            row = get_learner(conn, user)
    except psycopg.Error as exc:
        err_console.print(f"[red]PostgreSQL error[/red] ({redact_dsn(settings.postgres_dsn)}): {redact_dsn(str(exc))}")
        raise typer.Exit(1) from exc
    if row is None:
        err_console.print(f"no learner {user!r}")
        raise typer.Exit(1)
    print(json.dumps(row, default=str))


@cdc_app.command("register")
def cdc_register() -> None:
    """Create or update the Debezium connector and wait until it runs (what `coach migrate` does)."""
    import httpx

    from projections.debezium import CONNECTOR_NAME, ConnectorError, register_connector

    try:
        status = register_connector()
    except (ConnectorError, httpx.HTTPError) as exc:
        err_console.print(f"[red]connector {CONNECTOR_NAME} not running[/red]: {exc}")
        raise typer.Exit(1) from exc
    console.print(f"connector {CONNECTOR_NAME}: {status['connector']['state']}")


@cdc_app.command("status")
def cdc_status_command() -> None:
    """Connector and task state, replication slot lag (JSON); exit 1 unless the connector runs."""
    from projections.debezium import cdc_status

    status = cdc_status()
    print(json.dumps(status, indent=2))
    if status["state"] != "RUNNING" or any(state != "RUNNING" for state in status["tasks"]):
        raise typer.Exit(1)


def projector() -> None:
    """Run the projector (events → PostgreSQL read models) in the foreground; Ctrl-C/SIGTERM stop it cleanly."""
    from projections.projector import main

    main()


def asyncapi(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the document")] = Path(
        "docs/asyncapi.yaml"
    ),
) -> None:
    """Write the AsyncAPI 3.0 document of every topic, its messages and who produces and consumes them."""
    from projections.asyncapi import write_asyncapi

    write_asyncapi(output)
    console.print(f"wrote {output}")
