"""Decoding events from bytes: the map from (event_type, schema_version) to the contract class.

Older versions are upcast to the current one on read, the eventsourcing library's convention
(``upcast_v1_v2`` functions, kept with the superseded classes in :mod:`schemas.events_v1` and :mod:`schemas.events_v2`):
``TranscriptCreated`` v1 -> v2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.dead_letter import PoisonMessage
from schemas.envelope import EventEnvelope
from schemas.events import FeedbackGenerated, SubmissionReceived, TranscriptCreated
from schemas.events_v1 import TranscriptCreated as TranscriptCreatedV1
from schemas.events_v1 import upcast_transcript_created_v1_v2
from schemas.events_v2 import TranscriptCreated as TranscriptCreatedV2
from schemas.events_v2 import upcast_transcript_created_v2_v3

__all__ = ["EVENT_CLASSES", "UPCASTERS", "decode_event", "decode_expected", "encode_event", "Event"]

E = TypeVar("E", bound=EventEnvelope)

Event = SubmissionReceived | TranscriptCreated | FeedbackGenerated

EVENT_CLASSES: dict[tuple[str, int], type[EventEnvelope]] = {
    (cls.EVENT_TYPE, cls.SCHEMA_VERSION): cls
    for cls in (SubmissionReceived, TranscriptCreatedV1, TranscriptCreatedV2, TranscriptCreated, FeedbackGenerated)
}
"""Every (event_type, schema_version) a reader understands, including those only upcast."""

UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("TranscriptCreated", 1): upcast_transcript_created_v1_v2,
    ("TranscriptCreated", 2): upcast_transcript_created_v2_v3,
}
"""(event_type, from_version) -> function returning the dict at from_version + 1."""

_CURRENT: dict[str, int] = {}
for _type, _version in EVENT_CLASSES:
    _CURRENT[_type] = max(_version, _CURRENT.get(_type, 0))


# The current version of every event type as one union discriminated by ``event_type``: pydantic-core parses
# and validates the JSON bytes in one pass (no intermediate dict), faster than ``json.loads`` (the standard
# library's parser is slow on arrays of floats) + ``model_validate``. Only current versions are in it
# (``schema_version`` is a ``Literal`` on each class), so an older version, like any input it rejects,
# takes the general path below.
_CURRENT_UNION: TypeAdapter[Event] = TypeAdapter(
    Annotated[
        SubmissionReceived | TranscriptCreated | FeedbackGenerated,
        Field(discriminator="event_type"),
    ]
)

# The general path takes ``schema_version`` from the parsed JSON and requires a JSON integer, where the
# ``Literal[1]`` of the models also accepts ``1.0``: the fast path is taken only when the bytes spell
# ``"schema_version"`` once (in an accepted event, that is the top-level key: every model forbids extra fields),
# followed by a colon and a JSON integer, and hold no ``\u`` escape (with which another key could spell the
# same name). Inside a JSON string the quotes would be escaped, so the spelling cannot come from a value.
_SCHEMA_VERSION_KEY = b'"schema_version"'
_INTEGER_VALUE = re.compile(rb"\s*:\s*\d+[,}\s]")


def _fast_path_applies(data: bytes) -> bool:
    """Whether the JSON ``data`` certainly carries ``schema_version`` as a JSON integer, once (see above)."""
    at = data.find(_SCHEMA_VERSION_KEY)
    if at < 0 or data.find(_SCHEMA_VERSION_KEY, at + 1) >= 0 or b"\\u" in data:
        return False
    return _INTEGER_VALUE.match(data, at + len(_SCHEMA_VERSION_KEY)) is not None


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

    JSON input is first validated straight from the bytes against the current versions (pydantic-core's
    parser; the same models and validators as below, so it accepts the same events with the same values;
    ``schema_version`` must be a JSON integer there too, see :func:`_fast_path_applies`).
    Whatever that rejects is decoded again by the general path (``json.loads``, the ``event_type`` and
    ``schema_version`` checks, upcasting, ``model_validate``), so errors, and the events only an upcaster
    accepts, are exactly those of the general path.
    """
    if isinstance(data, bytes | str) and _fast_path_applies(data.encode("utf-8") if isinstance(data, str) else data):
        try:
            return _CURRENT_UNION.validate_json(data)
        except ValidationError:
            pass  # decoded again below, for the general path's error (or an upcast)
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


def decode_expected(value: bytes | None, expected: type[E], *, topic: str) -> E:
    """Decode one consumed message value that must be an ``expected`` event (the decode step of a consumer).

    Returns the event (upcast to the current version). Raises :class:`~schemas.dead_letter.PoisonMessage` and
    nothing else for any input that is not such an event: an empty value (tombstone), bytes that are not UTF-8 or
    not JSON, JSON too deeply nested to parse (``RecursionError``), a validation failure, an unknown
    ``event_type``/``schema_version``, or a valid event of another type (``error_class`` ``'UnexpectedEvent'``).
    """
    if not value:
        raise PoisonMessage("EmptyValue", f"empty message value (tombstone) on {topic}")
    try:
        event = decode_event(value)
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the message is poison
        raise PoisonMessage.of(exc, f"invalid {expected.EVENT_TYPE}") from exc
    if not isinstance(event, expected):
        raise PoisonMessage(
            "UnexpectedEvent",
            f"{event.event_type} does not belong on {topic} (expected {expected.EVENT_TYPE})",
            **event.ids(),
        )
    return event


def encode_event(event: EventEnvelope) -> bytes:
    """Serialise an event to UTF-8 JSON bytes (the wire format on every topic)."""
    return event.model_dump_json().encode("utf-8")
