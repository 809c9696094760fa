"""``coach feedback …``: run the feedback worker, or try the provider chain on one transcript.

* ``coach feedback worker``: one consumer-group member in the foreground; SIGTERM/Ctrl-C finishes the batch,
  commits and exits.
* ``coach feedback generate FILE``: feedback for a ``TranscriptCreated`` JSON file (or ``-`` for stdin) with the
  configured chain, printed as JSON; touches neither Kafka nor PostgreSQL. Handy to check an LLM endpoint,
  a prompt file or the rule thresholds.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from feedback.worker import run_feedback_worker

__all__ = ["app", "run_feedback_worker"]

app = typer.Typer(no_args_is_help=True, help="Coaching feedback: the worker, and a one-off generator.")


@app.command("worker")
def worker() -> None:
    """Feedback worker (consumer group 'feedback'): speech.transcripts.v1 → speech.feedback.v1."""
    from runtime.logs import configure_logging

    configure_logging("feedback-worker")
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_feedback_worker(stop)


@app.command("generate")
def generate(
    transcript: Annotated[str, typer.Argument(help="TranscriptCreated JSON file, or '-' for stdin")],
    level: Annotated[
        str | None, typer.Option(help="Learner's CEFR level (default COACH_FEEDBACK_DEFAULT_LEVEL)")
    ] = None,
) -> None:
    """Print the feedback the configured chain gives on one transcript (no Kafka, no PostgreSQL)."""
    from feedback.chain import build_chain
    from feedback.providers import FeedbackRequest
    from feedback.settings import FeedbackSettings
    from flows.metrics import compute_metrics
    from schemas import TranscriptCreated, decode_event

    raw = sys.stdin.read() if transcript == "-" else Path(transcript).read_text(encoding="utf-8")
    event = decode_event(raw)
    if not isinstance(event, TranscriptCreated):
        raise typer.BadParameter(f"expected a TranscriptCreated, got {event.event_type}")
    settings = FeedbackSettings()
    chain = build_chain(settings)
    try:
        outcome = chain.generate(
            FeedbackRequest(
                transcript=event.payload.text,
                metrics=compute_metrics(
                    event.payload.words.timed(),
                    recording_duration_s=event.payload.duration_s,
                    hesitations=event.payload.hesitations,
                ),
                level=(level or settings.default_level).upper(),
                language=event.payload.language,
                asr_model=event.payload.asr_model,
            )
        )
    finally:
        chain.close()
    result = outcome.result
    typer.echo(
        json.dumps(
            {
                "provider": result.provider,
                "model": result.model,
                "latency_ms": round(outcome.latency_ms, 1),
                "usage": result.usage.model_dump(),
                "text": result.text,
                "points": [p.model_dump() for p in result.points],
                "attempts": [a.model_dump() for a in outcome.attempts],
            },
            indent=2,
            ensure_ascii=False,
        )
    )
