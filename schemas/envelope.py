"""The event envelope shared by every event on the platform's topics.

Every event is an immutable, versioned record: ``event_id`` (UUIDv7, RFC 9562 §5.7), ``event_type``,
``schema_version``, ``occurred_at`` (tz-aware, normalised to UTC), ``user_id``, ``submission_id``,
``producer``, ``correlation_id`` (the id of the first event of a causal chain) and ``causation_id``
(the id of the event that directly caused this one), plus a typed ``payload``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import uuid6
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["EventEnvelope", "FrozenModel", "new_event_id", "utc_now", "UUIDv7", "UtcDatetime"]


def new_event_id() -> UUID:
    """Return a new UUIDv7 (time-ordered; RFC 9562 §5.7) as a standard :class:`uuid.UUID`."""
    return UUID(str(uuid6.uuid7()))


def utc_now() -> datetime:
    """Return the current time as a tz-aware UTC datetime."""
    return datetime.now(UTC)


def _require_v7(value: UUID) -> UUID:
    if value.version != 7:
        raise ValueError(f"must be a UUIDv7 (RFC 9562), got version {value.version}")
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UUIDv7 = Annotated[UUID, AfterValidator(_require_v7)]
"""A UUID that must be version 7 (time-ordered)."""

UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A tz-aware datetime, normalised to UTC. Naive datetimes are rejected."""


class FrozenModel(BaseModel):
    """Base of every contract model: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventEnvelope(FrozenModel):
    """Fields every event carries. Subclasses pin ``event_type``/``schema_version`` with ``Literal``s
    and add a typed ``payload``.

    Raises ``pydantic.ValidationError`` (naming the field) on a missing field, a naive datetime,
    a non-v7 ``event_id`` or an unknown ``schema_version``.
    """

    EVENT_TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]

    event_id: UUIDv7 = Field(default_factory=new_event_id, description="UUIDv7 of this event")
    event_type: str = Field(description="Name of the event type, e.g. 'SubmissionReceived'")
    schema_version: int = Field(description="Version of this event type's schema", ge=1)
    occurred_at: UtcDatetime = Field(default_factory=utc_now, description="When it happened (UTC)")
    user_id: str = Field(min_length=1, max_length=128, description="The learner; the topic key")
    submission_id: UUID = Field(description="The submission this event belongs to")
    producer: str = Field(min_length=1, description="Service that produced the event, e.g. 'ingestion'")
    correlation_id: UUID = Field(description="Id of the first event of this causal chain")
    causation_id: UUID | None = Field(default=None, description="Id of the event that caused this one")

    def ids(self) -> dict[str, Any]:
        """``user_id``, ``submission_id`` and ``event_id``: what a dead letter of this event names."""
        return {"user_id": self.user_id, "submission_id": self.submission_id, "event_id": self.event_id}

    def caused(self, **fields: Any) -> dict[str, Any]:
        """Envelope fields for an event caused by this one: same user, submission and correlation;
        ``causation_id`` = this event's id. Returns a dict to splat into the new event's constructor."""
        return {
            "user_id": self.user_id,
            "submission_id": self.submission_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
            **fields,
        }
