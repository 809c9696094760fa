"""Decoding events from bytes: the map from (event_type, schema_version) to the contract class.

Older versions are upcast to the current one on read, the eventsourcing library's convention
(``upcast_v1_v2`` functions); there are none yet because every event is at version 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.envelope import EventEnvelope
from schemas.events import FeedbackGenerated, SubmissionReceived, TranscriptCreated

__all__ = ["EVENT_CLASSES", "UPCASTERS", "decode_event", "encode_event", "Event"]

Event = SubmissionReceived | TranscriptCreated | FeedbackGenerated

EVENT_CLASSES: dict[tuple[str, int], type[EventEnvelope]] = {
    (cls.EVENT_TYPE, cls.SCHEMA_VERSION): cls for cls in (SubmissionReceived, TranscriptCreated, FeedbackGenerated)
}
"""Every (event_type, schema_version) a reader understands, including those only upcast."""

UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""(event_type, from_version) -> function returning the dict at from_version + 1."""

_CURRENT: dict[str, int] = {}
for _type, _version in EVENT_CLASSES:
    _CURRENT[_type] = max(_version, _CURRENT.get(_type, 0))


def _error(field: str, message: str, value: Any) -> ValidationError:
    return ValidationError.from_exception_data(
        "Event",
        [
            InitErrorDetails(
                type=PydanticCustomError("event_contract", message),
                loc=(field,),
                input=value,
            )
        ],
    )


def decode_event(data: bytes | str | dict[str, Any]) -> EventEnvelope:
    """Parse and validate one event (JSON bytes/str or an already parsed dict).

    Returns the current-version contract instance (older versions are upcast).
    Raises ``pydantic.ValidationError`` naming the offending field: unknown ``event_type``,
    unknown ``schema_version``, missing fields, naive datetimes…; ``ValueError`` on invalid JSON.
    """
    raw: Any = json.loads(data) if isinstance(data, bytes | str) else dict(data)
    if not isinstance(raw, dict):
        raise _error("__root__", "an event must be a JSON object", raw)
    event_type = raw.get("event_type")
    if event_type not in _CURRENT:
        raise _error("event_type", f"unknown event_type {event_type!r}", event_type)
    version = raw.get("schema_version")
    if not isinstance(version, int) or (event_type, version) not in EVENT_CLASSES:
        known = sorted(v for t, v in EVENT_CLASSES if t == event_type)
        raise _error(
            "schema_version",
            f"unknown schema_version {version!r} for {event_type} (known: {known})",
            version,
        )
    while version < _CURRENT[event_type]:
        raw = UPCASTERS[(event_type, version)](raw)
        version += 1
    return EVENT_CLASSES[(event_type, version)].model_validate(raw)


def encode_event(event: EventEnvelope) -> bytes:
    """Serialise an event to UTF-8 JSON bytes (the wire format on every topic)."""
    return event.model_dump_json().encode("utf-8")
