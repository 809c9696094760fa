"""``coach grafana export|push``: write the dashboards' JSON, or upload them to a Grafana (grafana-client).

Mounted by the ``coach`` CLI as ``coach grafana``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grafana.dashboards import DASHBOARDS_DIR, build_all, export_dashboards, stale_dashboards

__all__ = ["FOLDER_UID", "app", "push_dashboards"]

app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code: export the JSON, push to a Grafana.")

FOLDER_UID = "speech-coach"
"""Uid of the folder ``push`` puts the dashboards in (the provisioned ones live in a folder of the same title)."""


@app.command("export")
def export(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write <uid>.json")] = DASHBOARDS_DIR,
    check: Annotated[bool, typer.Option(help="Write nothing; exit 1 when the files differ from the code")] = False,
) -> None:
    """Write every dashboard's JSON (grafana/dashboards/ by default), or check that it is current."""
    if check:
        stale = stale_dashboards(directory)
        for name in stale:
            typer.echo(f"stale: {directory / name}")
        if stale:
            typer.echo("run `coach grafana export` to regenerate")
            raise typer.Exit(1)
        typer.echo(f"{len(build_all())} dashboards current in {directory}")
        return
    for path in export_dashboards(directory):
        typer.echo(f"wrote {path}")


def push_dashboards(
    url: str, token: str | None, *, folder: str = "Speech Coach", timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Create the folder (uid :data:`FOLDER_UID`) if missing and upload every dashboard into it, overwriting the
    same uid. ``token`` is a service-account token (``None``: credentials from the URL, ``http://user:pw@host``).
    Returns Grafana's answers. Raises ``grafana_client.client.GrafanaException`` on an HTTP error."""
    import json

    from grafana_client import GrafanaApi, TokenAuth
    from grafana_client.client import GrafanaClientError

    api = GrafanaApi.from_url(url, credential=TokenAuth(token) if token else None, timeout=timeout_s)
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        api.folder.create_folder(folder, uid=FOLDER_UID)
    answers = []
    for text in build_all().values():
        payload = {"dashboard": json.loads(text), "folderUid": FOLDER_UID, "overwrite": True, "message": "coach"}
        answers.append(api.dashboard.update_dashboard(payload))
    return answers


@app.command("push")
def push(
    url: Annotated[str, typer.Option(help="Grafana base URL, e.g. http://localhost:3000")],
    token: Annotated[
        str | None,
        typer.Option(envvar="COACH_GRAFANA_TOKEN", help="Service-account token (or user:password in the URL)"),
    ] = None,
    folder: Annotated[str, typer.Option(help="Folder title")] = "Speech Coach",
) -> None:
    """Upload every dashboard to a Grafana (same uids: re-running updates them in place)."""
    from grafana_client.client import GrafanaException
    from niquests.exceptions import RequestException

    try:
        answers = push_dashboards(url, token, folder=folder)
    except (GrafanaException, RequestException) as exc:
        typer.echo(f"push failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    for answer in answers:
        typer.echo(f"{answer.get('status', 'ok')}: {answer.get('url', answer.get('uid', ''))}")
