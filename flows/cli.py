"""Command line of the dataflows (Typer): ``coach replay …`` and ``coach flows run``.

* :data:`replay_app` — mount as ``coach replay``: ``metrics --version N [--drop-old] [--no-swap]``,
  ``drop-old --version N``, ``rollback --version N``, ``recover`` (each finishes or reverts a swap, rollback or
  drop-old that was interrupted first, from the swap journal: see :mod:`flows.replay`);
* :data:`flows_app` — mount as ``coach flows``: ``run`` runs the live metric dataflow in the foreground (for a
  deployment where the dataflows run apart from the progress API, i.e. with a ClickHouse server; in the local
  mode ``coach run`` runs them in-process).

``python -m flows`` runs both (``python -m flows replay metrics --version 2``, ``python -m flows run``).
Exit codes: 0 success; 1 verification failed or the dataflow failed; 2 bad usage or missing prerequisites.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["app", "flows_app", "replay_app"]

console = Console()
T = TypeVar("T")

replay_app = typer.Typer(
    no_args_is_help=True,
    help="Rebuild a dataflow's tables from the earliest offsets into versioned tables, verify, swap in.",
)
flows_app = typer.Typer(no_args_is_help=True, help="Run the Bytewax dataflows.")


@replay_app.command("metrics")
def replay_metrics_command(
    version: Annotated[int, typer.Option("--version", min=1, help="Version of the rebuilt tables (<table>_vN)")],
    drop_old: Annotated[bool, typer.Option("--drop-old", help="Drop the replaced tables after the swap")] = False,
    swap: Annotated[bool, typer.Option("--swap/--no-swap", help="Swap the verified tables in")] = True,
    database: Annotated[
        str | None, typer.Option(help="ClickHouse database (default COACH_CLICKHOUSE_DATABASE)")
    ] = None,
) -> None:
    """Replay speech.transcripts.v1 (and the learners' CDC) into submission_metrics_vN,
    learner_metrics_windows_vN and late_events_vN, verify them per learner, and swap them in."""
    from flows.metrics import METRICS_VERSION
    from flows.replay import ReplayError, replay_metrics

    console.print(f"replaying [bold]metrics[/bold] as version {version} (METRICS_VERSION={METRICS_VERSION})")
    progress = Progress(
        TextColumn("offsets"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("replay", total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=max(total, 1))

    try:
        with progress:
            report = replay_metrics(version, drop_old=drop_old, swap=swap, database=database, on_progress=on_progress)
    except ReplayError as exc:
        console.print(f"[red]replay failed[/red]: {exc}")
        prerequisite = ("coach migrate", "already swapped", "drop-old", "not dropping it", "Atomic engine")
        raise typer.Exit(2 if any(text in str(exc) for text in prerequisite) else 1) from exc

    for line in report.recovered:
        console.print(f"[yellow]recovered[/yellow]: {line}")
    table = Table(title=f"checks of {', '.join(report.tables.all())}", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail)
    console.print(table)
    rows = ", ".join(f"{name}: {count}" for name, count in sorted(report.rows.items()))
    console.print(f"{report.messages} messages in {report.seconds:.1f} s; rows written: {rows or 'none'}")
    if not report.ok:
        console.print("[red]verification failed[/red]: nothing swapped; the _v tables are kept for inspection")
        raise typer.Exit(1)
    if report.swapped:
        kept = "dropped" if report.dropped_old else f"kept as <table>_before_v{version}"
        console.print(f"[green]swapped in[/green] version {version}; the replaced tables were {kept}")
    else:
        console.print(f"verified; not swapped (tables {', '.join(report.tables.all())})")


def _on_clickhouse(operation: str, database: str | None, run: Callable[[Any, str], T]) -> T:
    """``run(client, database)`` with a ClickHouse client of ``database`` (default: the platform's); a
    :class:`flows.replay.ReplayError` is printed as ``<operation> failed`` and exits 2 (``typer.Exit``)."""
    from flows.replay import ReplayError
    from runtime.clickhouse import get_clickhouse_client
    from runtime.settings import PlatformSettings

    platform = PlatformSettings()
    database = database or platform.clickhouse_database
    try:
        return run(get_clickhouse_client(platform, database=database), database)
    except ReplayError as exc:
        console.print(f"[red]{operation} failed[/red]: {exc}")
        raise typer.Exit(2) from exc


@replay_app.command("drop-old")
def drop_old_command(
    version: Annotated[int, typer.Option("--version", min=1, help="The version whose replaced tables to drop")],
    database: Annotated[str | None, typer.Option(help="ClickHouse database")] = None,
) -> None:
    """Drop the <table>_before_vN tables kept when version N was swapped in (completes an interrupted drop-old)."""
    from flows.replay import drop_old_tables

    dropped = _on_clickhouse("drop-old", database, lambda client, db: drop_old_tables(client, db, version))
    console.print(f"dropped {', '.join(dropped) if dropped else 'nothing (no tables kept for that version)'}")


@replay_app.command("rollback")
def rollback_command(
    version: Annotated[int, typer.Option("--version", min=1, help="The version to swap out again")],
    database: Annotated[str | None, typer.Option(help="ClickHouse database")] = None,
) -> None:
    """Swap back the tables that were live before version N (running it twice undoes the rollback).

    After an interrupted swap of version N it reverts that swap; after an interrupted rollback it completes it."""
    from flows.replay import rollback

    done = _on_clickhouse("rollback", database, lambda client, db: rollback(client, db, version))
    console.print(f"rolled back version {version}: {done}")


@replay_app.command("recover")
def recover_command(
    database: Annotated[str | None, typer.Option(help="ClickHouse database")] = None,
) -> None:
    """Finish or revert a swap, rollback or drop-old that was interrupted (a crash), from the swap journal.

    An interrupted swap is reverted (the previous tables are live again), an interrupted rollback completed; an
    interrupted drop-old is reported (rerun `coach replay drop-old --version N`). Exit 2 when it cannot."""
    from flows.replay import recover

    actions = _on_clickhouse("recover", database, recover)
    for line in actions or ["nothing was interrupted"]:
        console.print(line)


@flows_app.command("run")
def run_command(
    stop_at_end: Annotated[
        bool, typer.Option("--stop-at-end", help="Stop once the input topics' end offsets at start are reached")
    ] = False,
    database: Annotated[str | None, typer.Option(help="ClickHouse database")] = None,
    recovery_dir: Annotated[Path | None, typer.Option(help="Bytewax recovery directory")] = None,
    log_level: Annotated[str, typer.Option(help="Level of the flows.* loggers (DEBUG logs every insert)")] = "INFO",
) -> None:
    """Run the live metric dataflow in the foreground until Ctrl-C (or --stop-at-end)."""
    from flows.dataflow import run_metrics_flow
    from runtime.logs import configure_logging

    configure_logging("replay")
    logging.getLogger("flows").setLevel(log_level.upper())
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_metrics_flow(stop, database=database, stop_at_end=stop_at_end, recovery_dir=recovery_dir)
    except Exception as exc:  # noqa: BLE001 - report and fail
        console.print(f"[red]dataflow failed[/red]: {exc}")
        raise typer.Exit(1) from exc


app = typer.Typer(no_args_is_help=True, help="Speech Coach dataflows.")
app.add_typer(replay_app, name="replay")
app.registered_commands.extend(flows_app.registered_commands)
