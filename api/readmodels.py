"""Queries on the PostgreSQL read models (``projections/sql``): submissions, timeline, transcripts, feedback,
learners. Every function takes a psycopg connection from the API's read-only pool and only SELECTs.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from api.analytics import utc
from api.models import FeedbackOut, TimelineEntry, TranscriptOut

__all__ = [
    "Cursor",
    "InvalidCursor",
    "LearnerRow",
    "cohort_learners",
    "coach_cohorts",
    "fetch_feedback",
    "fetch_submission",
    "fetch_timeline",
    "fetch_transcript",
    "list_cohorts",
    "list_submissions",
    "learner_visible_to_coach",
]


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not produce."""


@dataclass(frozen=True)
class Cursor:
    """Keyset position in a learner's submissions: the last item's sort time and id (newest first)."""

    at: datetime
    submission_id: uuid.UUID

    def encode(self) -> str:
        """Opaque URL-safe token."""
        raw = json.dumps({"at": utc(self.at).isoformat(), "id": str(self.submission_id)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse :meth:`encode`'s output. Raises :class:`InvalidCursor` on anything else."""
        try:
            raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            at = datetime.fromisoformat(raw["at"])
            if at.tzinfo is None:
                raise ValueError("naive time")
            return cls(utc(at), uuid.UUID(raw["id"]))
        except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise InvalidCursor(f"invalid cursor: {token[:40]!r}") from exc


def _utc_fields(row: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if row.get(name) is not None:
            row[name] = utc(row[name])
    return row


def _select(conn: Connection[Any], sql: str, params: Any, *utc_names: str) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts, the ``utc_names`` columns made timezone-aware UTC (``None`` kept)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    return [_utc_fields(row, *utc_names) for row in rows]


def _select_one(conn: Connection[Any], sql: str, params: Any, *utc_names: str) -> dict[str, Any] | None:
    """The first row of :func:`_select`, or None when there is none."""
    rows = _select(conn, sql, params, *utc_names)
    return rows[0] if rows else None


def fetch_submission(conn: Connection[Any], submission_id: uuid.UUID) -> dict[str, Any] | None:
    """The ``submissions`` row (with ``user_id``), or None."""
    return _select_one(
        conn,
        "SELECT submission_id, user_id, prompt_id, status, received_at, recorded_at, transcribed_at, feedback_at,"
        " failed_at, failure_reason, duration_s, asr_model FROM submissions WHERE submission_id = %s",
        (submission_id,),
        *("received_at", "recorded_at", "transcribed_at", "feedback_at", "failed_at"),
    )


def fetch_timeline(conn: Connection[Any], submission_id: uuid.UUID) -> list[TimelineEntry]:
    """Status changes of a submission, oldest first."""
    sql = "SELECT status, at, detail, event_id FROM submission_timeline WHERE submission_id = %s ORDER BY at, event_id"
    return [TimelineEntry(**row) for row in _select(conn, sql, (submission_id,), "at")]


def fetch_transcript(conn: Connection[Any], submission_id: uuid.UUID, *, words: bool) -> TranscriptOut | None:
    """The transcript (word timestamps only when ``words``), or None."""
    columns = "text, language, duration_s, word_count, asr_model, occurred_at" + (", words" if words else "")
    row = _select_one(
        conn, f"SELECT {columns} FROM transcripts WHERE submission_id = %s", (submission_id,), "occurred_at"
    )
    return TranscriptOut(**row) if row else None


def fetch_feedback(conn: Connection[Any], submission_id: uuid.UUID) -> FeedbackOut | None:
    """The feedback, or None."""
    sql = "SELECT provider, model, text, points, occurred_at, latency_ms FROM feedback WHERE submission_id = %s"
    row = _select_one(conn, sql, (submission_id,), "occurred_at")
    return FeedbackOut(**row) if row else None


def list_submissions(
    conn: Connection[Any], user_id: str, *, limit: int, after: Cursor | None, status: str | None
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A page of a learner's submissions, newest first (by ``received_at``, else the last change), and the cursor
    of the next page (None on the last page)."""
    clauses, params = ["user_id = %(user)s"], {"user": user_id, "limit": limit + 1}
    if status is not None:
        clauses.append("status = %(status)s")
        params["status"] = status
    if after is not None:
        clauses.append("(COALESCE(received_at, updated_at), submission_id) < (%(at)s, %(id)s)")
        params.update(at=after.at, id=after.submission_id)
    sql = (
        "SELECT submission_id, prompt_id, status, received_at, recorded_at, duration_s,"
        " COALESCE(received_at, updated_at) AS sort_at FROM submissions WHERE "
        + " AND ".join(clauses)
        + " ORDER BY sort_at DESC, submission_id DESC LIMIT %(limit)s"
    )
    rows = _select(conn, sql, params, "received_at", "recorded_at")
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = Cursor(rows[-1]["sort_at"], rows[-1]["submission_id"]) if more else None
    for row in rows:
        row.pop("sort_at")
    return rows, next_cursor


@dataclass(frozen=True)
class LearnerRow:
    """A learner profile row (the app owns ``learners``)."""

    user_id: str
    display_name: str | None
    cohort: str | None
    coach_id: str | None


def coach_cohorts(conn: Connection[Any], coach_id: str) -> list[str]:
    """The cohorts a coach coaches: those with at least one learner whose ``coach_id`` is the coach."""
    rows = conn.execute(
        "SELECT DISTINCT cohort FROM learners WHERE coach_id = %s AND cohort IS NOT NULL ORDER BY cohort",
        (coach_id,),
    ).fetchall()
    return [r[0] for r in rows]


def learner_visible_to_coach(conn: Connection[Any], coach_id: str, user_id: str) -> bool:
    """True when the coach coaches the learner, or coaches a cohort the learner is in."""
    row = conn.execute(
        "SELECT 1 FROM learners l WHERE l.user_id = %(user)s AND (l.coach_id = %(coach)s OR l.cohort IN"
        " (SELECT cohort FROM learners WHERE coach_id = %(coach)s AND cohort IS NOT NULL))",
        {"user": user_id, "coach": coach_id},
    ).fetchone()
    return row is not None


def list_cohorts(conn: Connection[Any], only: list[str] | None) -> list[tuple[str, int]]:
    """``(cohort, learners)`` for every cohort, or only those named in ``only``."""
    if only is not None and not only:
        return []
    sql = "SELECT cohort, count(*) FROM learners WHERE cohort IS NOT NULL"
    params: tuple[Any, ...] = ()
    if only is not None:
        sql += " AND cohort = ANY(%s)"
        params = (only,)
    rows = conn.execute(sql + " GROUP BY cohort ORDER BY cohort", params).fetchall()
    return [(r[0], int(r[1])) for r in rows]


def cohort_learners(conn: Connection[Any], cohort: str) -> list[LearnerRow]:
    """The learners of a cohort, by user id."""
    rows = conn.execute(
        "SELECT user_id, display_name, cohort, coach_id FROM learners WHERE cohort = %s ORDER BY user_id", (cohort,)
    ).fetchall()
    return [LearnerRow(*r) for r in rows]
