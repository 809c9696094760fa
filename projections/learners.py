"""Learner profiles (``learners``): owned by the app, written here, mirrored to analytics by Debezium.

``learners`` has ``REPLICA IDENTITY FULL``, so each change event on ``cdc.public.learners`` carries the whole row
before and after the change (e.g. a move to another cohort or coach).
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import Connection
from psycopg.rows import dict_row
from pydantic import Field, field_validator

from schemas.envelope import FrozenModel

__all__ = ["CEFR_LEVELS", "LearnerProfile", "get_learner", "upsert_learner"]

CEFR_LEVELS = ("A1", "A2", "B1", "B2", "C1", "C2")
"""Common European Framework of Reference levels accepted as ``target_level``."""

_FIELDS = ("display_name", "timezone", "native_language", "target_level", "cohort", "coach_id")


class LearnerProfile(FrozenModel):
    """Fields of a learner upsert; ``None`` leaves the stored value as it is (a new row gets the column default)."""

    user_id: str = Field(min_length=1, max_length=128, description="The learner (the events' user_id)")
    display_name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, description="IANA time zone, e.g. 'Europe/Paris' (default UTC)")
    native_language: str | None = Field(default=None, max_length=64, description="e.g. 'fr' or 'French'")
    target_level: Literal["A1", "A2", "B1", "B2", "C1", "C2"] | None = Field(default=None, description="CEFR level")
    cohort: str | None = Field(default=None, max_length=128)
    coach_id: str | None = Field(default=None, max_length=128, description="user_id of the learner's coach")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


def upsert_learner(conn: Connection[Any], profile: LearnerProfile) -> dict[str, Any]:
    """Insert the learner or update the given fields (one statement, its own transaction on an autocommit
    connection). ``updated_at`` is set to ``now()``; ``created_at`` is kept. Returns the stored row as a dict."""
    given = {name: getattr(profile, name) for name in _FIELDS if getattr(profile, name) is not None}
    columns = ["user_id", *given]
    placeholders = ", ".join(["%s"] * len(columns))
    updates = ", ".join([*(f"{name} = EXCLUDED.{name}" for name in given), "updated_at = now()"])
    query = (
        f"INSERT INTO learners ({', '.join(columns)}) VALUES ({placeholders})"  # column names are constants
        f" ON CONFLICT (user_id) DO UPDATE SET {updates} RETURNING *"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, [profile.user_id, *given.values()])  # type: ignore[arg-type]
        row = cur.fetchone()
    assert row is not None
    return row


def get_learner(conn: Connection[Any], user_id: str) -> dict[str, Any] | None:
    """The learner's row as a dict, or ``None``."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM learners WHERE user_id = %s", (user_id,))
        return cur.fetchone()
