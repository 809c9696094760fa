"""Idempotency-Key reservations in PostgreSQL (table ``idempotency_keys``): reserve → produce → confirm.

A key of a user owns exactly one submission. The *reservation* stores the whole ``SubmissionReceived`` event, so
its ``event_id`` and ``submission_id`` are fixed before anything is produced:

1. :func:`reserve` inserts ``(user, key, submission_id, event)`` unless the key exists, and returns the owner (this
   request's event, or the event of whoever reserved the key first);
2. the caller produces the owner's event and waits for the broker's acknowledgement;
3. :func:`confirm` marks the key ``confirmed_at = now()``.

A retry with the same key finds the row with :func:`find`. Confirmed: the first answer is replayed (202). Not
confirmed (the broker did not acknowledge in time — answered 503 — or the process died between reserve and
produce): the stored event is produced **again**, the same ``event_id`` and ``submission_id``, and confirmed on
acknowledgement. So a key never points at a submission that was not produced, and a late acknowledgement of the
first attempt (the 503'd event appears on the topic after all, e.g. written by a surviving leader) never makes a
second submission: the topic then holds the same event twice, which consumers deduplicate by ``event_id`` /
``submission_id`` (the projector's ``processed_events``, feedback by submission). The key is never released.

Rows from before migration ``0006`` have no stored event; they were written after their acknowledgement and
count as confirmed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from schemas import SubmissionReceived

__all__ = ["Reservation", "confirm", "find", "reserve"]

_SELECT = "SELECT submission_id, event, confirmed_at FROM idempotency_keys WHERE user_id = %s AND idempotency_key = %s"


@dataclass(frozen=True)
class Reservation:
    """The owner of a key: its submission id, the stored event (None for rows written before the event was
    stored, which are confirmed) and whether the broker acknowledged it (``confirmed``)."""

    submission_id: uuid.UUID
    event: SubmissionReceived | None
    confirmed: bool


def _reservation(row: Any) -> Reservation:
    submission_id, event, confirmed_at = row
    parsed = SubmissionReceived.model_validate(event) if event is not None else None
    return Reservation(submission_id, parsed, confirmed_at is not None or parsed is None)


def find(pool: ConnectionPool, user_id: str, key: str) -> Reservation | None:
    """The reservation of ``(user_id, key)``, or None. PostgreSQL errors propagate."""
    with pool.connection() as conn:
        row = conn.execute(
            _SELECT,
            (user_id, key),
        ).fetchone()
    return _reservation(row) if row else None


def reserve(pool: ConnectionPool, user_id: str, key: str, event: SubmissionReceived) -> Reservation:
    """Reserve ``key`` for ``event`` (its ``submission_id``) unless it is reserved already; returns the owner:
    ``event`` itself (unconfirmed) when this call reserved it, else the earlier reservation. Atomic against
    concurrent calls (``INSERT … ON CONFLICT DO NOTHING`` on the primary key). PostgreSQL errors propagate."""
    with pool.connection() as conn:
        inserted = conn.execute(
            "INSERT INTO idempotency_keys (user_id, idempotency_key, submission_id, event) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING submission_id",
            (user_id, key, event.submission_id, Jsonb(event.model_dump(mode="json"))),
        ).fetchone()
        if inserted is not None:
            return Reservation(event.submission_id, event, confirmed=False)
        row = conn.execute(
            _SELECT,
            (user_id, key),
        ).fetchone()
    if row is None:  # pragma: no cover - keys are never deleted
        raise RuntimeError(f"idempotency key {key!r} of {user_id!r} vanished while being reserved")
    return _reservation(row)


def confirm(pool: ConnectionPool, user_id: str, key: str, submission_id: uuid.UUID) -> None:
    """Mark the reservation of ``submission_id`` confirmed (its event was acknowledged by the broker); idempotent.
    PostgreSQL errors propagate (the reservation then stays unconfirmed and a retry produces the event again)."""
    with pool.connection() as conn:
        conn.execute(
            "UPDATE idempotency_keys SET confirmed_at = now() WHERE user_id = %s AND idempotency_key = %s"
            " AND submission_id = %s AND confirmed_at IS NULL",
            (user_id, key, submission_id),
        )
