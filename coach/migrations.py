"""``coach migrate``: topics, PostgreSQL migrations, the Debezium connector, ClickHouse migrations (idempotent)."""

from __future__ import annotations

from rich.console import Console

from runtime.redaction import redact_dsn
from runtime.settings import PlatformSettings

__all__ = ["run_migrations"]


def _failed(console: Console, what: str, where: str, exc: BaseException) -> None:
    """Print a failed step: ``what`` (markup), where it connected and the error, credentials redacted."""
    console.print(f"{what} ({redact_dsn(where)}): {redact_dsn(str(exc))}")


def run_migrations(
    console: Console,
    *,
    settings: PlatformSettings | None = None,
    topics: bool = True,
    postgres: bool = True,
    clickhouse: bool = True,
    cdc: bool = True,
) -> bool:
    """Apply every migration step and print what changed. Returns False when a step failed.

    A failed step prints where it tried to connect and the error, both through
    :func:`runtime.redaction.redact_dsn`: no password of a DSN or URL reaches the console.
    """
    settings = settings or PlatformSettings()
    ok = True
    if topics:
        from runtime.kafka import ensure_topics
        from schemas.topics import TOPICS

        try:
            for name, outcome in ensure_topics(TOPICS, settings).items():
                console.print(f"topic {name}: {outcome}")
        except Exception as exc:  # noqa: BLE001 - report and continue with the other steps
            _failed(console, "[red]topics failed[/red]", settings.bootstrap_servers, exc)
            ok = False
    if postgres:
        import psycopg

        from projections import SQL_DIR
        from runtime.sql_migrations import apply_postgres

        try:
            with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
                applied = apply_postgres(conn, SQL_DIR)
            console.print(f"postgres: applied {applied or 'nothing (up to date)'}")
        except Exception as exc:  # noqa: BLE001
            _failed(console, "[red]postgres migrations failed[/red]", settings.postgres_dsn, exc)
            ok = False
    if cdc and ok:
        import httpx

        from projections.debezium import ConnectorError, register_connector

        try:
            state = register_connector(settings)
            tasks = ", ".join(t.get("state", "?") for t in state.get("tasks", []))
            console.print(
                f"debezium connector {state.get('name')}: {state.get('connector', {}).get('state')} (tasks: {tasks})"
            )
        except (ConnectorError, httpx.HTTPError) as exc:
            _failed(console, "[red]debezium connector registration failed[/red]", settings.connect_rest_url, exc)
            ok = False
    if clickhouse:
        from clickhouse import SQL_DIR as CH_SQL_DIR
        from runtime.clickhouse import get_clickhouse_client
        from runtime.sql_migrations import apply_clickhouse

        try:
            client = get_clickhouse_client(settings)
            applied = apply_clickhouse(client, CH_SQL_DIR, settings.clickhouse_database)
            console.print(f"clickhouse: applied {applied or 'nothing (up to date)'}")
        except Exception as exc:  # noqa: BLE001
            _failed(console, "[red]clickhouse migrations failed[/red]", settings.clickhouse_dsn, exc)
            ok = False
    return ok
