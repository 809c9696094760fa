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

__all__ = ["MAX_ORIGINAL_VALUE_BYTES", "DeadLetterRecord", "PoisonMessage"]

MAX_ORIGINAL_VALUE_BYTES = 256 * 1024
"""Most bytes of the original value a dead letter carries (base64 grows it by 4/3): a hostile message near the
broker's ``message.max.bytes`` must still fit in its dead letter. Longer values are truncated and flagged."""


class PoisonMessage(Exception):
    """A consumed message that can never be processed, whatever the retries: undecodable, invalid, of the wrong
    event type, or refused by a stage for a reason of its own (no speech, no words…).

    The one error of every consumer's decode step (``decode(bytes) -> event`` raises only this): the consumer loop
    writes it to the topic's dead-letter topic as a :class:`DeadLetterRecord` and moves on. ``error_class`` names
    the cause (the original exception's class, or a short code such as ``'BlobNotFound'``); ``reason`` is human
    readable; ``known`` holds ``user_id``/``submission_id``/``event_id`` when they could be read.
    """

    def __init__(self, error_class: str, reason: str, **known: object) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason or error_class
        self.known = {key: value for key, value in known.items() if value is not None}

    @classmethod
    def of(cls, exc: BaseException, context: str = "", **known: object) -> PoisonMessage:
        """Wrap any exception raised while decoding or handling one message (``context`` prefixes the reason)."""
        if isinstance(exc, PoisonMessage):
            return exc
        text = str(exc) or type(exc).__name__
        return cls(type(exc).__name__, f"{context}: {text}" if context else text, **known)


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
    original_value_truncated: bool = Field(
        default=False, description="True when the value was longer than MAX_ORIGINAL_VALUE_BYTES and was cut there"
    )
    user_id: str | None = Field(default=None, description="When the message could be parsed")
    submission_id: UUID | None = Field(default=None, description="When the message could be parsed")
    event_id: UUID | None = Field(default=None, description="The original event's id, when parseable")

    def original_value(self) -> bytes:
        """Decode the original message bytes."""
        return base64.b64decode(self.original_value_b64)

    @staticmethod
    def encode_value(value: bytes | None) -> str:
        """Base64 of the original value (empty string for a tombstone), at most MAX_ORIGINAL_VALUE_BYTES of it."""
        return base64.b64encode((value or b"")[:MAX_ORIGINAL_VALUE_BYTES]).decode("ascii")
