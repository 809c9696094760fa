"""``coach serve api``: the read-only progress API in the foreground (what the ``api`` container runs).

Mounted by the ``coach`` CLI (``serve_app.command("api")(serve)``).
"""

from __future__ import annotations

import typer

from api.app import serve_api
from api.settings import ApiSettings
from runtime.clickhouse import is_embedded
from runtime.settings import PlatformSettings

__all__ = ["serve"]


def serve() -> None:
    """Serve the progress API on COACH_API_HOST:COACH_API_PORT (default 127.0.0.1:8001) until Ctrl-C."""
    from runtime.logs import configure_logging

    configure_logging("progress-api")
    platform, settings = PlatformSettings(), ApiSettings()
    if is_embedded(platform.clickhouse_dsn):
        typer.echo(
            "note: ClickHouse is embedded chDB; its data directory opens in one process only, so while the "
            "dataflows run, serve the API from `coach run` instead",
            err=True,
        )
    typer.echo(f"progress API on http://{settings.host}:{settings.port} (docs at /docs)", err=True)
    serve_api(settings=settings)
