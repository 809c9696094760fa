"""Learners' local calendars: window ids and bounds, wall-clock time, timezone history, CDC parsing."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from flows.calendar import (
    EARLIEST,
    LearnerCalendar,
    TimezoneChange,
    TimezoneHistory,
    WindowKind,
    local_wall_time,
    parse_learner_change,
    valid_timezone,
    wall_to_instant,
)
from schemas.dead_letter import PoisonMessage

pytestmark = pytest.mark.unit

CALENDAR = LearnerCalendar()


def _bounds_by_kind(wall: datetime, calendar: LearnerCalendar = CALENDAR) -> dict[WindowKind, list]:
    found: dict[WindowKind, list] = {}
    for window_id in calendar.window_ids(wall):
        bounds = calendar.bounds(window_id)
        found.setdefault(bounds.kind, []).append(bounds)
    return found


def test_tokyo_evening_utc_is_next_local_day() -> None:
    instant = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)
    wall = local_wall_time(instant, "Asia/Tokyo")
    assert wall == datetime(2024, 3, 2, 8, 30, tzinfo=UTC)
    (daily,) = _bounds_by_kind(wall)[WindowKind.DAILY]
    assert daily.start.date() == date(2024, 3, 2)
    assert wall_to_instant(daily.start, "Asia/Tokyo") == datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
    assert wall_to_instant(daily.end, "Asia/Tokyo") == datetime(2024, 3, 2, 15, 0, tzinfo=UTC)
    # the same instant for a learner in UTC stays on March 1st
    (utc_daily,) = _bounds_by_kind(local_wall_time(instant, "UTC"))[WindowKind.DAILY]
    assert utc_daily.start.date() == date(2024, 3, 1)


def test_each_instant_is_in_one_daily_one_weekly_and_seven_sliding_windows() -> None:
    wall = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)  # a Wednesday
    kinds = _bounds_by_kind(wall)
    assert [len(kinds[k]) for k in WindowKind] == [1, 1, 7]
    (weekly,) = kinds[WindowKind.WEEKLY]
    assert weekly.start == datetime(2024, 3, 4, tzinfo=UTC)  # ISO week starts on Monday
    assert weekly.end - weekly.start == timedelta(days=7)
    sliding = sorted(kinds[WindowKind.SLIDING_7D], key=lambda b: b.start)
    assert [b.start.date() for b in sliding] == [date(2024, 2, 29) + timedelta(days=i) for i in range(7)]
    assert all(b.start <= wall < b.end and b.end - b.start == timedelta(days=7) for b in sliding)


def test_window_ids_round_trip_through_bounds() -> None:
    for wall in (datetime(1969, 12, 31, 23, 59, tzinfo=UTC), datetime(2030, 7, 4, 0, 0, tzinfo=UTC)):
        for window_id in CALENDAR.window_ids(wall):
            bounds = CALENDAR.bounds(window_id)
            assert bounds.start <= wall < bounds.end
            assert bounds.start.time() == datetime.min.time()  # every window starts at local midnight


def test_week_start_setting_moves_weekly_windows() -> None:
    sunday_weeks = LearnerCalendar(week_start=6)
    (weekly,) = _bounds_by_kind(datetime(2024, 3, 6, tzinfo=UTC), sunday_weeks)[WindowKind.WEEKLY]
    assert weekly.start == datetime(2024, 3, 3, tzinfo=UTC)  # a Sunday


def test_local_days_follow_dst_changes() -> None:
    # Europe/Berlin springs forward on 2024-03-31: that local day lasts 23 hours, the one in October 25.
    (spring,) = _bounds_by_kind(local_wall_time(datetime(2024, 3, 31, 12, tzinfo=UTC), "Europe/Berlin"))[
        WindowKind.DAILY
    ]
    start, end = wall_to_instant(spring.start, "Europe/Berlin"), wall_to_instant(spring.end, "Europe/Berlin")
    assert (start, end - start) == (datetime(2024, 3, 30, 23, tzinfo=UTC), timedelta(hours=23))
    (autumn,) = _bounds_by_kind(local_wall_time(datetime(2024, 10, 27, 12, tzinfo=UTC), "Europe/Berlin"))[
        WindowKind.DAILY
    ]
    start, end = wall_to_instant(autumn.start, "Europe/Berlin"), wall_to_instant(autumn.end, "Europe/Berlin")
    assert (start, end - start) == (datetime(2024, 10, 26, 22, tzinfo=UTC), timedelta(hours=25))


def test_timezone_history_applies_changes_by_effective_time() -> None:
    history = TimezoneHistory()
    assert history.at(datetime(2024, 1, 1, tzinfo=UTC)) is None
    history.apply(TimezoneChange("u", "UTC", datetime(2024, 2, 1, tzinfo=UTC)))
    history.apply(TimezoneChange("u", "Asia/Tokyo", datetime(2024, 3, 1, tzinfo=UTC)))
    history.apply(TimezoneChange("u", "Asia/Tokyo", datetime(2024, 3, 1, tzinfo=UTC)))  # duplicate delivery
    history.apply(TimezoneChange("u", "Europe/Berlin", datetime(2024, 2, 15, tzinfo=UTC)))  # out of order
    assert history.changes == (
        (EARLIEST, "UTC"),  # the first known zone applies to everything before it
        (datetime(2024, 2, 15, tzinfo=UTC), "Europe/Berlin"),
        (datetime(2024, 3, 1, tzinfo=UTC), "Asia/Tokyo"),
    )
    assert history.at(datetime(2023, 1, 1, tzinfo=UTC)) == "UTC"
    assert history.at(datetime(2024, 2, 20, tzinfo=UTC)) == "Europe/Berlin"
    assert history.at(datetime(2024, 3, 1, tzinfo=UTC)) == "Asia/Tokyo"


def _debezium(op: str, after: dict | None, ts_ms: int = 1_709_251_200_000, *, envelope: bool = False) -> bytes:
    body = {"before": None, "after": after, "op": op, "source": {"ts_ms": ts_ms, "table": "learners"}, "ts_ms": ts_ms}
    return json.dumps({"schema": {}, "payload": body} if envelope else body).encode()


@pytest.mark.parametrize("envelope", [False, True])
def test_parse_debezium_learner_change(envelope: bool) -> None:
    change = parse_learner_change(_debezium("u", {"user_id": "u1", "timezone": "Asia/Tokyo"}, envelope=envelope))
    assert change == TimezoneChange("u1", "Asia/Tokyo", datetime(2024, 3, 1, tzinfo=UTC))


def test_parse_learner_change_rejects_what_carries_no_timezone() -> None:
    assert parse_learner_change(None) is None  # tombstone
    assert parse_learner_change(_debezium("d", None)) is None
    with pytest.raises(PoisonMessage, match="invalid JSON"):
        parse_learner_change(b"not json")
    with pytest.raises(PoisonMessage, match="neither a change event nor a tombstone"):
        parse_learner_change(b"")
    with pytest.raises(PoisonMessage, match="without after.user_id"):
        parse_learner_change(_debezium("c", {"timezone": "UTC"}))
    with pytest.raises(PoisonMessage, match="not a representable instant"):
        parse_learner_change(json.dumps({"op": "c", "after": {"user_id": "u"}, "ts_ms": 10**20}).encode())
    invalid = parse_learner_change(_debezium("c", {"user_id": "u2", "timezone": "Mars/Olympus"}))
    assert invalid is not None and invalid.timezone == "UTC"
    assert valid_timezone("Mars/Olympus", "Europe/Paris") == "Europe/Paris"
