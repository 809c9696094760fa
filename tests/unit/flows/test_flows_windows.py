"""Per-learner event-time windows on Bytewax's real engine (TestingSource/run_main, no broker, no ClickHouse)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.calendar import LearnerCalendar, TimezoneChange, TimezoneHistory
from flows.dataflow import assign_timezones, learner_windows
from flows.records import Scored, SourceMessage, score_batch
from flows.synthetic import synthetic_transcript
from flows.tables import LATE_COLUMNS, WINDOW_COLUMNS
from flows.windowing import LearnerClock
from schemas.registry import encode_event

pytestmark = pytest.mark.unit

LATENESS = timedelta(hours=2)
DAY1 = datetime(2024, 3, 5, tzinfo=UTC)  # a Tuesday


def scored(user: str, at: datetime, offset: int, *, words: int = 30) -> Scored:
    event = synthetic_transcript(user, at, words=words, seed=offset)
    (result,) = score_batch(
        [SourceMessage("speech.transcripts.v1", 0, offset, user.encode(), encode_event(event))], pause_threshold_s=0.25
    )
    assert isinstance(result, Scored)
    return result


def history(timezone: str) -> TimezoneHistory:
    tz = TimezoneHistory()
    tz.apply(TimezoneChange("any", timezone, datetime(2020, 1, 1, tzinfo=UTC)))
    return tz


def run_windows(
    items: Sequence[Any],
    *,
    changes: Iterable[Any] = (),
    preload: dict[str, TimezoneHistory] | None = None,
    replay: bool = True,
    recovery: RecoveryConfig | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the timezone and window stages; returns (window rows, late rows) as dicts."""
    flow = Dataflow("test_windows")
    keyed = op.key_on("key", op.input("scored", flow, TestingSource(items)), lambda s: s.user_id)
    cdc = op.map("key_changes", op.input("changes", flow, TestingSource(list(changes))), lambda c: (c.user_id, c))
    placed = assign_timezones(keyed, cdc, preload=preload)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    clock = LearnerClock(LATENESS, follow_system_time=not replay, close_at_eof=replay, now_getter=lambda: now)
    windows, late = learner_windows(placed, calendar=LearnerCalendar(), clock=clock)
    window_out: list[Any] = []
    late_out: list[Any] = []
    op.output("windows_out", windows, TestingSink(window_out))
    op.output("late_out", late, TestingSink(late_out))
    run_main(flow, epoch_interval=timedelta(seconds=0), recovery_config=recovery)
    return (
        [dict(zip(WINDOW_COLUMNS, row, strict=True)) for _key, (row, _position) in window_out],
        [dict(zip(LATE_COLUMNS, row, strict=True)) for _key, (row, _position) in late_out],
    )


def of_kind(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["window_kind"] == kind), key=lambda r: r["window_start"])


def test_submission_at_2330_utc_lands_in_next_local_day_in_tokyo() -> None:
    at = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)
    windows, late = run_windows(
        [scored("tokyo", at, 0), scored("london", at, 1)], preload={"tokyo": history("Asia/Tokyo")}
    )
    assert late == []
    (tokyo,) = [r for r in of_kind(windows, "daily") if r["user_id"] == "tokyo"]
    assert (tokyo["timezone"], tokyo["local_start_date"]) == ("Asia/Tokyo", date(2024, 3, 2))
    assert (tokyo["window_start"], tokyo["window_end"]) == (
        datetime(2024, 3, 1, 15, tzinfo=UTC),
        datetime(2024, 3, 2, 15, tzinfo=UTC),
    )
    (london,) = [r for r in of_kind(windows, "daily") if r["user_id"] == "london"]
    assert (london["timezone"], london["local_start_date"]) == ("UTC", date(2024, 3, 1))


def test_timezone_from_the_cdc_stream() -> None:
    change = TimezoneChange("osaka", "Asia/Tokyo", datetime(2024, 1, 1, tzinfo=UTC))
    # the transcripts start after a pause so that the change is processed first
    items = [
        TestingSource.PAUSE(timedelta(milliseconds=300)),
        scored("osaka", datetime(2024, 3, 1, 23, 30, tzinfo=UTC), 0),
    ]
    windows, _ = run_windows(items, changes=[change])
    (daily,) = of_kind(windows, "daily")
    assert (daily["timezone"], daily["local_start_date"]) == ("Asia/Tokyo", date(2024, 3, 2))


def test_sliding_window_membership() -> None:
    s = scored("u", DAY1 + timedelta(hours=10), 0)
    windows, _ = run_windows([s])
    sliding = of_kind(windows, "sliding_7d")
    assert [r["local_start_date"] for r in sliding] == [date(2024, 2, 28) + timedelta(days=i) for i in range(7)]
    assert all(r["window_end"] - r["window_start"] == timedelta(days=7) for r in sliding)
    assert all(r["submissions"] == 1 and r["word_count"] == s.metrics.word_count for r in sliding)
    (weekly,) = of_kind(windows, "weekly")
    assert weekly["local_start_date"] == date(2024, 3, 4)


def test_out_of_order_within_lateness_lands_in_its_window_later_ones_are_late() -> None:
    items = [
        scored("u", DAY1 + timedelta(hours=10), 0),
        scored("u", DAY1 + timedelta(hours=11, minutes=30), 1),  # watermark 09:30
        scored("u", DAY1 + timedelta(hours=10, minutes=15), 2),  # out of order, within the lateness
        scored("u", DAY1 + timedelta(days=1, hours=9), 3),  # watermark day 2 07:00: day 1 closes
        scored("u", DAY1 + timedelta(hours=20), 4),  # behind the watermark: late
    ]
    windows, late = run_windows(items)
    daily = of_kind(windows, "daily")
    assert [(r["local_start_date"], r["submissions"]) for r in daily] == [(date(2024, 3, 5), 3), (date(2024, 3, 6), 1)]
    assert daily[0]["first_occurred_at"] == DAY1 + timedelta(hours=10)
    assert daily[0]["last_occurred_at"] == DAY1 + timedelta(hours=11, minutes=30)
    # the late one is reported once per window it missed: 1 daily, 1 weekly, 7 sliding
    assert {r["submission_id"] for r in late} == {items[4].submission_id}
    assert sorted(r["window_kind"] for r in late) == ["daily", "sliding_7d", *["sliding_7d"] * 6, "weekly"]
    (late_daily,) = [r for r in late if r["window_kind"] == "daily"]
    assert late_daily["window_start"] == DAY1 and late_daily["source_offset"] == 4
    # ...and is in no window
    (weekly,) = of_kind(windows, "weekly")
    assert weekly["submissions"] == 4


def test_window_results_do_not_depend_on_arrival_order() -> None:
    # all within the allowed lateness of each other, so none is late in either order
    items = [scored("u", DAY1 + timedelta(hours=9, minutes=30 * i), i) for i in range(4)]
    forward, forward_late = run_windows(items)
    backward, backward_late = run_windows(items[::-1])
    assert forward_late == backward_late == []

    def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(({k: v for k, v in r.items() if k != "computed_at"} for r in rows), key=repr)

    assert comparable(forward) == comparable(backward)
    (daily,) = of_kind(forward, "daily")
    assert daily["vocabulary_token_count"] >= 50 and daily["vocabulary_sufficient"] is True


def test_live_clock_keeps_open_windows_at_end_of_input() -> None:
    items = [scored("u", DAY1 + timedelta(hours=10), 0), scored("u", DAY1 + timedelta(days=2, hours=10), 1)]
    windows, _ = run_windows(items, replay=False)
    assert [r["local_start_date"] for r in of_kind(windows, "daily")] == [date(2024, 3, 5)]


def test_resume_after_abort_gives_the_same_windows(tmp_path: Path) -> None:
    items = [scored("u", DAY1 + timedelta(hours=6 * i), i) for i in range(12)]
    clean, clean_late = run_windows(items)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    with_abort = [*items[:7], TestingSource.ABORT(), *items[7:]]
    first, first_late = run_windows(with_abort, recovery=recovery)
    second, second_late = run_windows(with_abort, recovery=recovery)

    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        # what ReplacingMergeTree keeps: the last row per natural key
        return {
            (r["user_id"], r["window_kind"], r["window_start"]): {k: v for k, v in r.items() if k != "computed_at"}
            for r in rows
        }

    assert keyed(first + second) == keyed(clean)
    assert first_late + second_late == clean_late == []
