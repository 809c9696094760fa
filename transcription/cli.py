"""``coach worker transcription``: run transcription consumer-group members in the foreground."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer

__all__ = ["app", "run_transcription_worker"]

app = typer.Typer(no_args_is_help=True, help="Run a service's workers in the foreground.")


def run_transcription_worker(stop: threading.Event, metrics_port: int | None = None) -> None:
    """Run one worker in this process until ``stop`` is set (serves /metrics on ``metrics_port``)."""
    from prometheus_client import start_http_server

    from transcription.worker import TranscriptionWorker, WorkerSettings

    port = WorkerSettings().metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1")
    TranscriptionWorker().run(stop)


@app.command("transcription")
def transcription(
    processes: Annotated[
        int | None, typer.Option(help="Worker processes (default COACH_TRANSCRIPTION_WORKER_PROCESSES)")
    ] = None,
) -> None:
    """Transcription workers (consumer group 'transcription'); SIGTERM/Ctrl-C finishes the batch and exits."""
    from runtime.logs import configure_logging
    from transcription.worker import WorkerSettings

    configure_logging("transcription-worker")
    settings = WorkerSettings()
    count = processes or settings.processes
    if count > 1:
        children = []
        for index in range(count):
            env = dict(os.environ, COACH_TRANSCRIPTION_WORKER_PROCESSES="1")
            if settings.group_instance_id:
                env["COACH_TRANSCRIPTION_WORKER_GROUP_INSTANCE_ID"] = f"{settings.group_instance_id}-{index}"
            if settings.metrics_port:
                env["COACH_TRANSCRIPTION_WORKER_METRICS_PORT"] = str(settings.metrics_port + index)
            children.append(subprocess.Popen([sys.executable, "-m", "coach.cli", "worker", "transcription"], env=env))

        def _forward(signum: int, _frame: object) -> None:
            for child in children:
                child.send_signal(signum)

        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)
        codes = [child.wait() for child in children]
        raise typer.Exit(max(codes))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_transcription_worker(stop)
