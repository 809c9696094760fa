"""The dead-letter record written to ``<topic>.dlq`` when a consumer cannot process a message.

Dead letters are not enveloped events: the original message may not even be parseable. They carry
the original coordinates (topic, partition, offset), key and value (base64) so the message can be
inspected and re-driven, plus the error class and a human-readable reason.
"""

from __future__ import annotations

import base64
from typing import Literal
from uuid import UUID

from pydantic import Field

from schemas.envelope import FrozenModel, UtcDatetime, UUIDv7, new_event_id, utc_now

__all__ = ["DeadLetterRecord"]


class DeadLetterRecord(FrozenModel):
    """A poison message and why it was rejected."""

    record_type: Literal["DeadLetter"] = "DeadLetter"
    schema_version: Literal[1] = 1
    dead_letter_id: UUIDv7 = Field(default_factory=new_event_id)
    failed_at: UtcDatetime = Field(default_factory=utc_now)
    original_topic: str
    original_partition: int = Field(ge=0)
    original_offset: int = Field(ge=0)
    original_key: str | None = None
    original_value_b64: str = Field(description="The original message value, base64")
    consumer_group: str = Field(description="Consumer group that rejected it")
    error_class: str = Field(description="e.g. 'ValidationError', 'UndecodableAudio'")
    reason: str = Field(min_length=1, description="Why it was rejected, human readable")
    user_id: str | None = Field(default=None, description="When the message could be parsed")
    submission_id: UUID | None = Field(default=None, description="When the message could be parsed")
    event_id: UUID | None = Field(default=None, description="The original event's id, when parseable")

    def original_value(self) -> bytes:
        """Decode the original message bytes."""
        return base64.b64decode(self.original_value_b64)

    @staticmethod
    def encode_value(value: bytes | None) -> str:
        """Base64 of the original value (empty string for a tombstone)."""
        return base64.b64encode(value or b"").decode("ascii")
