"""Learners' local calendars: window ids and bounds, local wall-clock time, timezone history from CDC.

Engine-agnostic (no Bytewax): :mod:`flows.windowing` wraps it in Bytewax's windowing interfaces.

**Local windows by wall-clock time.** A learner's daily window runs from local midnight to the next local
midnight, their weekly window from local midnight of ``week_start`` (Monday by default, ISO 8601) for seven
local days, and the sliding 7-day windows start at every local midnight and last seven local days (1-day step;
each submission is in 7 of them). To get these right across DST changes (a local day of 23 or 25 hours), the
windows are computed on the **local wall-clock time** of each submission, expressed as a UTC-tagged datetime
(:func:`local_wall_time`): in wall-clock time every local day is exactly 24 hours, so fixed-length windows
aligned to a local midnight are exactly the local calendar days and weeks. Window bounds are converted back to
UTC instants (:func:`wall_to_instant`) when a row is written.

**Timezones from CDC.** The learner's IANA zone comes from Debezium change events of the ``learners`` read
model (``cdc.public.learners``). :class:`TimezoneHistory` keeps the zones a learner has had with the time each
took effect (the change's commit time, ``source.ts_ms``); a submission is placed in the zone in effect at its
``occurred_at``. The first zone known for a learner applies to everything before it (a learner created with
``UTC`` and moved to ``Asia/Tokyo`` a minute later is in Tokyo for all later submissions; a Debezium snapshot
taken after the fact applies to the whole history). Unknown learners and invalid zone names use the default
zone (UTC).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flows.metrics.windows import KIND_ORDER, WindowKind
from schemas.dead_letter import PoisonMessage

__all__ = [
    "DAY",
    "KIND_ORDER",
    "EARLIEST",
    "LearnerCalendar",
    "TimezoneChange",
    "TimezoneHistory",
    "WindowBounds",
    "WindowKind",
    "local_wall_time",
    "parse_learner_change",
    "valid_timezone",
    "wall_to_instant",
    "zone",
]

DAY = timedelta(days=1)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""Effective-from time of a learner's first known timezone: it applies to every earlier submission too."""

_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # the first Monday of the Unix epoch
_SLIDING_DAYS = 7


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The :class:`~zoneinfo.ZoneInfo` of an IANA name. Raises ``ZoneInfoNotFoundError``/``ValueError``."""
    return ZoneInfo(name)


def valid_timezone(name: object, default: str = "UTC") -> str:
    """``name`` when it is a known IANA zone, else ``default``."""
    if not isinstance(name, str) or not name:
        return default
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown, malformed, or a name no file can have
        return default
    return name


def local_wall_time(instant: datetime, timezone: str) -> datetime:
    """The wall-clock time of ``instant`` (tz-aware) in ``timezone``, tagged as UTC.

    ``2024-03-01T23:30Z`` in ``Asia/Tokyo`` -> ``2024-03-02T08:30Z`` (08:30 local). Only differences and
    comparisons of such values are meaningful: they measure local calendar time.
    """
    return instant.astimezone(zone(timezone)).replace(tzinfo=UTC)


def wall_to_instant(wall: datetime, timezone: str) -> datetime:
    """The UTC instant at which the local wall-clock time ``wall`` (as from :func:`local_wall_time`) occurs.

    A wall time skipped by a DST change resolves with the offset in effect before the change, a repeated one
    to its first occurrence (``fold=0``), as :mod:`zoneinfo` does. Memoised (window bounds repeat).
    """
    return _wall_to_instant(wall, timezone)


@lru_cache(maxsize=65536)
def _wall_to_instant(wall: datetime, timezone: str) -> datetime:
    return wall.replace(tzinfo=zone(timezone)).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class WindowBounds:
    """A window in local wall-clock time: ``[start, end)``, both UTC-tagged wall times."""

    kind: WindowKind
    start: datetime
    end: datetime


@dataclass(frozen=True)
class LearnerCalendar:
    """Window ids and bounds of the three window kinds, on local wall-clock time.

    A window id is ``n * 3 + k`` with ``k`` the kind's position in :data:`KIND_ORDER` and ``n`` the window's
    number: days since the alignment origin (daily, and the start day of a sliding window) or weeks (weekly).
    The origin (``align_to``) is local midnight of 1970-01-05 (a Monday) shifted by ``week_start`` days.
    """

    week_start: int = 0

    @property
    def align_to(self) -> datetime:
        """Origin of every window: a local midnight on the first day of a week (wall time, UTC-tagged)."""
        return _MONDAY + self.week_start * DAY

    def day_number(self, wall: datetime) -> int:
        """Local days from the origin to ``wall`` (floor)."""
        return (wall - self.align_to) // DAY

    def window_ids(self, wall: datetime) -> list[int]:
        """Ids of every window containing the wall time ``wall``: 1 daily, 1 weekly, 7 sliding."""
        day = self.day_number(wall)
        ids = [day * 3, (day // 7) * 3 + 1]
        ids.extend(start * 3 + 2 for start in range(day - _SLIDING_DAYS + 1, day + 1))
        return ids

    def bounds(self, window_id: int) -> WindowBounds:
        """The kind and the wall-time bounds of a window id (memoised: the windowing operator and the row
        builders ask for the same windows' bounds many times)."""
        return _bounds(self, window_id)

    def _compute_bounds(self, window_id: int) -> WindowBounds:
        number, position = divmod(window_id, 3)
        kind = KIND_ORDER[position]
        if kind is WindowKind.DAILY:
            start = self.align_to + number * DAY
            return WindowBounds(kind, start, start + DAY)
        if kind is WindowKind.WEEKLY:
            start = self.align_to + number * 7 * DAY
            return WindowBounds(kind, start, start + 7 * DAY)
        start = self.align_to + number * DAY
        return WindowBounds(kind, start, start + _SLIDING_DAYS * DAY)


@lru_cache(maxsize=65536)
def _bounds(calendar: LearnerCalendar, window_id: int) -> WindowBounds:
    """:meth:`LearnerCalendar.bounds`, memoised per (calendar, window id); the bounds are immutable."""
    return calendar._compute_bounds(window_id)


@dataclass(frozen=True, slots=True)
class TimezoneChange:
    """A learner's timezone as of ``effective_from`` (UTC), read from a CDC change event."""

    user_id: str
    timezone: str
    effective_from: datetime


@dataclass
class TimezoneHistory:
    """The timezones a learner has had: ``(effective_from, zone)`` sorted by time, first one from
    :data:`EARLIEST`; keeps the newest ``limit`` entries. The state of the dataflow's timezone step: ``apply``
    replaces the (immutable) tuple, so copies and snapshots share it."""

    changes: tuple[tuple[datetime, str], ...] = ()
    limit: int = 64

    def __deepcopy__(self, memo: dict[int, Any]) -> TimezoneHistory:
        return TimezoneHistory(self.changes, self.limit)  # the tuple of immutable pairs needs no copy

    def apply(self, change: TimezoneChange) -> None:
        """Record ``change``; idempotent (the same change twice, or a change to the zone already in effect,
        is a no-op)."""
        if not self.changes:
            self.changes = ((EARLIEST, change.timezone),)
            return
        if self.at(change.effective_from) == change.timezone:
            return
        changes = list(self.changes)
        position = bisect.bisect_right(changes, change.effective_from, key=lambda entry: entry[0])
        if position > 0 and changes[position - 1][0] == change.effective_from:
            changes[position - 1] = (change.effective_from, change.timezone)
        else:
            changes.insert(position, (change.effective_from, change.timezone))
        if len(changes) > self.limit:
            del changes[1 : len(changes) - self.limit + 1]
        self.changes = tuple(changes)

    def at(self, instant: datetime) -> str | None:
        """The zone in effect at ``instant``, or ``None`` when nothing is known."""
        if not self.changes:
            return None
        position = bisect.bisect_right(self.changes, instant, key=lambda entry: entry[0])
        return self.changes[max(position - 1, 0)][1]


def _millis_to_utc(value: Any) -> datetime | None:
    """Milliseconds since the epoch as a UTC datetime; ``None`` when absent or not a number. Raises
    ``PoisonMessage`` when the number is outside the datetimes Python can represent."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PoisonMessage.of(exc, f"ts_ms {value!r} is not a representable instant") from exc
    return None


def parse_learner_change(value: bytes | None, *, default_timezone: str = "UTC") -> TimezoneChange | None:
    """The timezone carried by one Debezium change event of ``learners`` (the flow's CDC decode step).

    Accepts the JSON converter's output with or without schemas (``{"payload": {...}}`` or the bare
    ``{"before", "after", "op", "source", "ts_ms"}``). Creates, updates and snapshot reads (``op`` c/u/r)
    yield ``after.user_id`` and ``after.timezone`` (an unknown zone name becomes ``default_timezone``),
    effective from ``source.ts_ms`` (the commit time; ``ts_ms`` when absent). Deletes (``d``), truncates
    (``t``) and tombstones (a null value) carry no timezone and yield ``None`` (a deleted learner keeps its last
    zone for its remaining events). Anything else raises :class:`~schemas.dead_letter.PoisonMessage`: bytes that are
    not UTF-8 JSON, a document without a known ``op``, a create/update without ``after.user_id``, a ``ts_ms``
    outside the representable instants (Debezium format:
    https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-events).
    """
    if value is None:
        return None
    if not value:
        raise PoisonMessage("EmptyValue", "an empty value is neither a change event nor a tombstone (null)")
    try:
        document = json.loads(value)
    except Exception as exc:  # noqa: BLE001 - not UTF-8, not JSON, nested too deeply…
        raise PoisonMessage.of(exc, "invalid JSON") from exc
    if isinstance(document, dict) and isinstance(document.get("payload"), dict):
        document = document["payload"]
    if not isinstance(document, dict):
        raise PoisonMessage(
            "InvalidChangeEvent", f"a change event must be a JSON object, got {type(document).__name__}"
        )
    op = document.get("op")
    if op in ("d", "t"):
        return None
    if op not in ("c", "u", "r"):
        raise PoisonMessage("InvalidChangeEvent", f"unknown op {str(op)[:50]!r} (expected c, u, r, d or t)")
    after = document.get("after")
    if not isinstance(after, dict) or not isinstance(after.get("user_id"), str) or not after["user_id"]:
        raise PoisonMessage("InvalidChangeEvent", f"op {op!r} without after.user_id")
    if len(after["user_id"]) > 128:
        raise PoisonMessage("InvalidChangeEvent", "after.user_id longer than 128 characters")
    source = document.get("source")
    source = source if isinstance(source, dict) else {}
    effective = _millis_to_utc(source.get("ts_ms")) or _millis_to_utc(document.get("ts_ms")) or EARLIEST
    timezone = after.get("timezone")
    return TimezoneChange(
        user_id=after["user_id"],
        timezone=valid_timezone(timezone if isinstance(timezone, str) else None, default_timezone),
        effective_from=effective,
    )
