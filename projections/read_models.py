"""Writes of the projector into the PostgreSQL read models, and its stored consumer positions.

Every function runs inside the caller's transaction (a psycopg connection whose transaction the projector opens per
micro-batch) and is idempotent, so a replayed or duplicated event changes nothing:

* an event is applied once: its ``event_id`` (or a dead letter's ``dead_letter_id``) is claimed in
  ``processed_events`` first (see :func:`claim_events`);
* ``submissions`` merges facts commutatively (each timestamp is set once, failures keep the newest, the status is
  recomputed from the merged facts by the SQL function ``submission_status``), so events of the three topics may
  arrive in any order (a transcript before its submission creates the row) and the status never moves backwards;
* ``transcripts`` and ``feedback`` keep the first event per submission (a duplicate ``TranscriptCreated`` with a new
  ``event_id``, e.g. from a worker that crashed before committing, is ignored);
* ``submission_timeline`` gets one row per applied event, keyed by ``event_id``.

Tables: ``projections/sql/0001_read_models.sql``, ``0003_projector_cdc.sql`` and ``0004_submission_recorded_at.sql``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.types.json import Jsonb

from schemas.dead_letter import DeadLetterRecord
from schemas.events import FeedbackGenerated, SubmissionReceived, TranscriptCreated
from schemas.registry import Event

__all__ = [
    "prune_processed_events",
    "SubmissionStatus",
    "apply_dead_letter",
    "apply_event",
    "claim_events",
    "load_positions",
    "store_positions",
]


class SubmissionStatus:
    """Values of ``submissions.status`` and ``submission_timeline.status``."""

    RECEIVED = "received"
    TRANSCRIBED = "transcribed"
    FEEDBACK = "feedback"
    FAILED = "failed"


def claim_events(conn: Connection[Any], event_ids: Iterable[UUID]) -> set[UUID]:
    """Insert ``event_ids`` into ``processed_events``; return those that were not there before.

    One statement for a whole micro-batch. An id listed twice is returned once; the caller applies each returned id
    once and skips every other event (already applied by an earlier transaction).
    """
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return set()
    rows = conn.execute(
        "INSERT INTO processed_events (event_id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
        (ids,),
    ).fetchall()
    return {row[0] for row in rows}


def prune_processed_events(conn: Connection[Any], *, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete up to ``limit`` ``processed_events`` rows claimed more than ``older_than`` ago; returns how many.

    The dedup ledger only has to outlive the window in which a duplicate of an event can arrive: producers'
    at-least-once retries and a worker re-processing its uncommitted batch after a crash re-publish within minutes,
    and the projector never re-reads a committed offset (its offsets are written in the same transaction as the
    rows). Without pruning the table grows by one row per event forever. Raises ``ValueError`` when ``older_than``
    is not positive.
    """
    if older_than <= timedelta(0):
        raise ValueError("older_than must be positive")
    cutoff = datetime.now(UTC) - older_than
    cursor = conn.execute(
        "DELETE FROM processed_events WHERE event_id IN "
        "(SELECT event_id FROM processed_events WHERE processed_at < %s LIMIT %s)",
        (cutoff, limit),
    )
    return cursor.rowcount


_FACTS: tuple[str, ...] = ("received_at", "transcribed_at", "feedback_at", "failed_at")
"""The ``submissions`` timestamps the SQL function ``submission_status`` derives the status from, in its argument
order."""


def _upsert_submission(status: str, fact: str, columns: tuple[str, ...], **merged: str) -> str:
    """The ``submissions`` upsert of one fact: the timestamp column ``fact`` (one of :data:`_FACTS`, set to the
    parameter ``at``) and ``columns`` (each set to the parameter of its name).

    A new row gets ``status`` and ``updated_at = at``. On conflict ``fact`` and each of ``columns`` is merged: set
    to the SQL expression ``merged[column]`` (``s.`` the stored row, ``EXCLUDED.`` this one), by default the stored
    value unless it is NULL (each is set once); ``status`` is recomputed by ``submission_status`` from the merged
    timestamps and ``updated_at`` keeps the later one. Parameters: ``submission_id``, ``user_id``, ``at`` and
    ``columns``.
    """
    names = (fact, *columns)
    merge = {name: merged.get(name, f"COALESCE(s.{name}, EXCLUDED.{name})") for name in names}
    facts = ", ".join(merge.get(name, f"s.{name}") for name in _FACTS)
    values = ", ".join(f"%({'at' if name == fact else name})s" for name in names)
    updates = [f"{name} = {expression}" for name, expression in merge.items()]
    updates += [f"status = submission_status({facts})", "updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)"]
    return (
        f"INSERT INTO submissions AS s (submission_id, user_id, status, {', '.join(names)}, updated_at)\n"
        f"VALUES (%(submission_id)s, %(user_id)s, '{status}', {values}, %(at)s)\n"
        "ON CONFLICT (submission_id) DO UPDATE SET\n    " + ",\n    ".join(updates)
    )


_UPSERT_SUBMISSION_RECEIVED = _upsert_submission(
    SubmissionStatus.RECEIVED,
    "received_at",
    ("prompt_id", "recorded_at", "blob_uri", "duration_s"),
    # the container's duration wins over the decoded one a transcript may have put there first
    duration_s="CASE WHEN s.received_at IS NULL THEN EXCLUDED.duration_s ELSE s.duration_s END",
)
_UPSERT_SUBMISSION_TRANSCRIBED = _upsert_submission(
    SubmissionStatus.TRANSCRIBED, "transcribed_at", ("recorded_at", "asr_model", "duration_s")
)
_UPSERT_SUBMISSION_FEEDBACK = _upsert_submission(SubmissionStatus.FEEDBACK, "feedback_at", ("asr_model",))
# The newest failure wins (ties broken by the reason, so the result does not depend on arrival order).
_UPSERT_SUBMISSION_FAILED = _upsert_submission(
    SubmissionStatus.FAILED,
    "failed_at",
    ("failure_reason",),
    failed_at="GREATEST(s.failed_at, EXCLUDED.failed_at)",
    failure_reason="""CASE
        WHEN s.failed_at IS NULL OR EXCLUDED.failed_at > s.failed_at
             OR (EXCLUDED.failed_at = s.failed_at AND EXCLUDED.failure_reason > s.failure_reason)
        THEN EXCLUDED.failure_reason ELSE s.failure_reason END""",
)

_INSERT_TIMELINE = """
INSERT INTO submission_timeline (event_id, submission_id, user_id, status, at, detail)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING
"""

_INSERT_TRANSCRIPT = """
INSERT INTO transcripts (submission_id, event_id, user_id, text, language, duration_s, word_count, asr_model,
                         occurred_at, words)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""

_INSERT_FEEDBACK = """
INSERT INTO feedback (submission_id, event_id, user_id, provider, model, text, points, occurred_at, latency_ms,
                      metrics_version, asr_model)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


def apply_event(conn: Connection[Any], event: Event) -> bool:
    """Project one (already claimed) event. Returns False when it was ignored as a later duplicate of a transcript
    or feedback for the same submission (the first one is kept); True otherwise.

    Raises ``psycopg.Error``: ``DataError``/``IntegrityError`` for a value PostgreSQL refuses (e.g. a NUL character
    in a text), ``OperationalError`` when the connection is lost.
    """
    if isinstance(event, SubmissionReceived):
        p = event.payload
        conn.execute(
            _UPSERT_SUBMISSION_RECEIVED,
            {
                "submission_id": event.submission_id,
                "user_id": event.user_id,
                "prompt_id": p.prompt_id,
                "recorded_at": p.recorded_at,
                "at": event.occurred_at,
                "blob_uri": p.blob.uri,
                "duration_s": p.duration_s,
            },
        )
        detail = f"{p.container} {p.duration_s:.2f} s" + (f", prompt {p.prompt_id}" if p.prompt_id else "")
        _timeline(conn, event.event_id, event.submission_id, event.user_id, SubmissionStatus.RECEIVED, event, detail)
        return True
    if isinstance(event, TranscriptCreated):
        t = event.payload
        row = (t.text, t.language, t.duration_s, len(t.words), t.asr_model, event.occurred_at)
        words = Jsonb([w._asdict() for w in t.words.timed()])
        return _project_first(
            conn,
            event,
            (_INSERT_TRANSCRIPT, (*row, words)),
            (
                _UPSERT_SUBMISSION_TRANSCRIBED,
                {"recorded_at": t.recorded_at, "asr_model": t.asr_model, "duration_s": t.duration_s},
            ),
            SubmissionStatus.TRANSCRIBED,
            f"{t.asr_model} ({t.device}, {t.compute_type}), {len(t.words)} words",
        )
    if isinstance(event, FeedbackGenerated):
        f = event.payload
        points = Jsonb([point.model_dump(mode="json") for point in f.points])
        return _project_first(
            conn,
            event,
            (
                _INSERT_FEEDBACK,
                (f.provider, f.model, f.text, points, event.occurred_at, f.latency_ms, f.metrics_version, f.asr_model),
            ),
            (_UPSERT_SUBMISSION_FEEDBACK, {"asr_model": f.asr_model}),
            SubmissionStatus.FEEDBACK,
            f.provider + (f"/{f.model}" if f.model else ""),
        )
    raise TypeError(f"no projection for {type(event).__name__}")


def apply_dead_letter(conn: Connection[Any], record: DeadLetterRecord) -> bool:
    """Mark the submission of a (claimed) dead letter failed with its reason; False when it names no submission.

    ``failed_at`` is the dead letter's ``failed_at``; the row is created when the submission is not projected yet.
    """
    if record.submission_id is None:
        return False
    user_id = record.user_id or record.original_key or ""
    conn.execute(
        _UPSERT_SUBMISSION_FAILED,
        {
            "submission_id": record.submission_id,
            "user_id": user_id,
            "at": record.failed_at,
            "failure_reason": record.reason,
        },
    )
    conn.execute(
        _INSERT_TIMELINE,
        (
            record.dead_letter_id,
            record.submission_id,
            user_id,
            SubmissionStatus.FAILED,
            record.failed_at,
            f"{record.consumer_group} on {record.original_topic}: {record.error_class}: {record.reason}"[:2000],
        ),
    )
    return True


def _project_first(
    conn: Connection[Any],
    event: TranscriptCreated | FeedbackGenerated,
    insert: tuple[str, tuple[Any, ...]],
    upsert: tuple[str, dict[str, Any]],
    status: str,
    detail: str,
) -> bool:
    """Apply a transcript or feedback event, of which the first per submission is kept.

    ``insert`` is the row statement and its values after ``(submission_id, event_id, user_id)``; when it inserts
    nothing (a later duplicate) nothing else is written and False is returned. Otherwise ``upsert`` (a
    ``submissions`` statement and its parameters besides ``submission_id``, ``user_id`` and ``at``) and a timeline
    row with ``status`` and ``detail`` follow, and True is returned. Raises ``psycopg.Error`` as :func:`apply_event`.
    """
    sql, values = insert
    if not conn.execute(sql, (event.submission_id, event.event_id, event.user_id, *values)).rowcount:
        return False
    sql, params = upsert
    conn.execute(
        sql, {"submission_id": event.submission_id, "user_id": event.user_id, "at": event.occurred_at, **params}
    )
    _timeline(conn, event.event_id, event.submission_id, event.user_id, status, event, detail)
    return True


def _timeline(
    conn: Connection[Any], event_id: UUID, submission_id: UUID, user_id: str, status: str, event: Event, detail: str
) -> None:
    conn.execute(_INSERT_TIMELINE, (event_id, submission_id, user_id, status, event.occurred_at, detail))


def store_positions(conn: Connection[Any], consumer_group: str, positions: Mapping[tuple[str, int], int]) -> None:
    """Upsert the next offsets to read, ``{(topic, partition): next_offset}``, of ``consumer_group``.

    Positions only move forward (``GREATEST``): a member that lost a partition in a rebalance and commits late
    cannot move it back. To rebuild the projection from the topics, truncate the read models, ``processed_events``
    and this group's positions in one transaction (with the projector stopped).
    """
    if not positions:
        return
    conn.cursor().executemany(
        "INSERT INTO projection_offsets (consumer_group, topic, partition, next_offset, updated_at)"
        " VALUES (%s, %s, %s, %s, now())"
        " ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET"
        " next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()",
        [(consumer_group, topic, partition, offset) for (topic, partition), offset in sorted(positions.items())],
    )


def load_positions(
    conn: Connection[Any], consumer_group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Stored next offsets of ``consumer_group`` for the given ``(topic, partition)`` pairs (missing ones absent)."""
    wanted = set(partitions)
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE consumer_group = %s",
        (consumer_group,),
    ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows if (topic, partition) in wanted}
