"""PostgreSQL state of the feedback worker: the deduplication ledger and the learner's CEFR level.

**Idempotency.** Delivery of transcripts is at least once (a crash before the offset commit, a rebalance, or a
second ``TranscriptCreated`` for the same submission after a transcription worker retried). The worker must
still emit one ``FeedbackGenerated`` per ``submission_id``. It uses the ledger ``feedback_dedup``
(``projections/sql/0002_feedback_dedup.sql``) around the produce:

1. :meth:`FeedbackStore.find` the submission. Published → nothing to do (no LLM call, no event).
2. Otherwise generate the feedback, then :meth:`FeedbackStore.reserve` it: ``INSERT … ON CONFLICT DO NOTHING``
   stores the encoded event under the submission's primary key. If another worker reserved first, its row wins
   and the worker continues with *that* event.
3. Produce the reserved event's bytes and wait for the acknowledgement, then :meth:`FeedbackStore.mark_published`.

The one window left is a crash between the acknowledgement and step 3: the transcript is re-delivered, finds the
row still reserved and produces the *same* stored event again (same ``event_id``, same bytes). Consumers that
deduplicate by ``event_id`` (the projector's ``processed_events``) or by ``submission_id`` (the ``feedback`` read
model's primary key) drop it. So: exactly one distinct feedback event per submission, and in the normal
re-delivery case exactly one message on the topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID

from psycopg_pool import ConnectionPool

from schemas.events import FeedbackGenerated
from schemas.registry import encode_event

__all__ = ["DEDUP_TABLE", "DedupEntry", "FeedbackStore"]

DEDUP_TABLE = "feedback_dedup"
"""The ledger table (created by ``projections/sql/0002_feedback_dedup.sql``)."""


@dataclass(frozen=True, slots=True)
class DedupEntry:
    """A ledger row: the feedback event reserved for a submission and whether it was acknowledged."""

    submission_id: UUID
    event_id: UUID
    event_json: str
    published: bool


class FeedbackStore:
    """Connection pool plus the ledger and learner queries. Thread-safe.

    Raises ``psycopg.OperationalError`` when PostgreSQL is unreachable (``pool.wait`` at start-up fails after
    ``connect_timeout_s``) and ``psycopg.errors.UndefinedTable`` if ``coach migrate`` was not run.
    """

    def __init__(self, dsn: str, *, max_size: int = 4, connect_timeout_s: float = 30.0) -> None:
        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=max(1, max_size), kwargs={"autocommit": True}, open=True, name="feedback"
        )
        try:
            self._pool.wait(timeout=connect_timeout_s)
        except Exception:
            self._pool.close()
            raise

    def find(self, submission_id: UUID) -> DedupEntry | None:
        """The ledger row of ``submission_id``, or None."""
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT submission_id, event_id, event_json, published_at IS NOT NULL FROM {DEDUP_TABLE}"
                " WHERE submission_id = %s",
                (submission_id,),
            ).fetchone()
        return DedupEntry(*row) if row else None

    def reserve(self, event: FeedbackGenerated, *, transcript_event_id: UUID) -> DedupEntry:
        """Reserve ``event`` for its submission; returns the row that won (this one, or one reserved earlier)."""
        event_json = encode_event(event).decode("utf-8")
        with self._pool.connection() as conn:
            row = conn.execute(
                f"INSERT INTO {DEDUP_TABLE} (submission_id, event_id, transcript_event_id, user_id, provider,"
                " event_json) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (submission_id) DO NOTHING"
                " RETURNING submission_id, event_id, event_json, false",
                (
                    event.submission_id,
                    event.event_id,
                    transcript_event_id,
                    event.user_id,
                    event.payload.provider,
                    event_json,
                ),
            ).fetchone()
        if row:
            return DedupEntry(*row)
        existing = self.find(event.submission_id)
        if existing is None:  # pragma: no cover - rows are never deleted
            raise RuntimeError(f"{DEDUP_TABLE} row of {event.submission_id} vanished")
        return existing

    def mark_published(self, submission_id: UUID) -> None:
        """Record that the reserved event of ``submission_id`` was acknowledged by the broker."""
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE {DEDUP_TABLE} SET published_at = now() WHERE submission_id = %s AND published_at IS NULL",
                (submission_id,),
            )

    def take_llm_budget(self, user_id: str, submission_id: UUID, day: date, budget: int) -> bool:
        """Spend one unit of ``user_id``'s LLM budget of ``day`` (UTC) on ``submission_id``; True when it fits in
        ``budget`` feedbacks a day. Idempotent per submission (a redelivered transcript spends nothing more).
        Several workers spending for one learner at the same instant may pass the budget by their number."""
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO llm_budget (user_id, day, submission_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (user_id, day, submission_id),
            )
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE reserved_at <= (SELECT reserved_at FROM llm_budget"
                " WHERE user_id = %s AND day = %s AND submission_id = %s)) FROM llm_budget WHERE user_id = %s"
                " AND day = %s",
                (user_id, day, submission_id, user_id, day),
            ).fetchone()
        return row is not None and int(row[0]) <= budget

    def learner_level(self, user_id: str) -> str | None:
        """The learner's CEFR level from ``learners.target_level`` (upper-cased), or None when unknown."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT target_level FROM learners WHERE user_id = %s", (user_id,)).fetchone()
        if not row or not row[0]:
            return None
        return str(row[0]).strip().upper()

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()
