"""The progress cache's pure parts: the pre-serialised body equals the model's, the byte bound, and the
generation rule that keeps a fill which raced an invalidation out of the cache (no engine needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.models import WINDOW_KINDS, ProgressResponse, WindowKind, WindowPoint
from api.progress import summarize
from api.progress_cache import LearnerProgress, ProgressCache, build_learner_progress
from tests.analytics_fixtures import learner_window_points

pytestmark = pytest.mark.unit

START = datetime(2024, 1, 1, tzinfo=UTC)


def _model_body(
    user_id: str,
    windows: dict[WindowKind, list[WindowPoint]],
    kinds: tuple[WindowKind, ...],
    start: datetime,
    end: datetime,
) -> bytes:
    """What the endpoint returned before the cache (api.app, fetch_windows + ProgressResponse)."""
    series = {
        kind: sorted((w for w in windows.get(kind, []) if start <= w.window_start < end), key=lambda w: w.window_start)
        for kind in kinds
    }
    weekly = [w for w in windows.get("weekly", []) if w.window_start < end]
    body = ProgressResponse.model_validate(
        {"user_id": user_id, "from": start, "to": end, "series": series, "summary": summarize(weekly, baseline_weeks=2)}
    )
    return body.model_dump_json(by_alias=True).encode()


@pytest.mark.parametrize(
    ("kinds", "start", "end"),
    [
        (WINDOW_KINDS, START, START + timedelta(days=91)),  # everything, summary over all weeks
        (("weekly",), START + timedelta(days=7), START + timedelta(days=21)),  # summary up to 'to' only
        (("sliding_7d", "daily"), START - timedelta(days=3), START + timedelta(days=10, microseconds=5)),
        (WINDOW_KINDS, START + timedelta(days=200), START + timedelta(days=300)),  # no window in range
        (("daily",), START + timedelta(hours=12, microseconds=123456), START + timedelta(days=2, seconds=1)),
        (WINDOW_KINDS, START - timedelta(days=30), START + timedelta(days=1)),  # one weekly window before 'to'
    ],
)
def test_render_equals_the_models_serialisation(kinds: tuple[WindowKind, ...], start: datetime, end: datetime) -> None:
    windows = learner_window_points()
    entry = build_learner_progress('learner-é"x', windows, baseline_weeks=2)
    assert entry.render(kinds, start, end) == _model_body('learner-é"x', windows, kinds, start, end)


def test_render_of_a_learner_withoutlearner_window_points() -> None:
    entry = build_learner_progress("nobody", {}, baseline_weeks=2)
    end = START + timedelta(days=5)
    assert entry.render(WINDOW_KINDS, START, end) == _model_body("nobody", {}, WINDOW_KINDS, START, end)


class _NoReader:
    """ProgressCache only reads ClickHouse in load(), which these tests do not call."""


def _cache(max_bytes: int = 10**7, ttl_s: float = 60.0, clock: list[float] | None = None) -> ProgressCache:
    now = clock if clock is not None else [0.0]
    reader: Any = _NoReader()
    return ProgressCache(reader, baseline_weeks=2, max_bytes=max_bytes, ttl_s=ttl_s, timer=lambda: now[0])


def _entry(user_id: str) -> LearnerProgress:
    return build_learner_progress(user_id, learner_window_points(14), baseline_weeks=2)


def test_a_fill_that_raced_an_invalidation_is_not_stored() -> None:
    cache = _cache()
    generation = cache.generation()  # a request starts reading ClickHouse…
    cache.invalidate(["someone-else"])  # …the change feed sees new windows meanwhile…
    assert not cache.put(_entry("ana"), generation)  # …so its possibly older answer is not kept
    assert cache.get("ana") is None
    assert cache.put(_entry("ana"), cache.generation())
    assert cache.get("ana") is not None


def test_invalidate_drops_only_the_named_learners() -> None:
    cache = _cache()
    for user in ("ana", "bo", "cy"):
        cache.put(_entry(user), cache.generation())
    assert cache.invalidate(["bo", "not-cached"]) == 1
    assert cache.get("bo") is None and cache.get("ana") is not None and cache.get("cy") is not None
    cache.clear()
    assert cache.stats() == {"entries": 0, "bytes": 0}


def test_entries_are_keyed_by_learner() -> None:
    cache = _cache()
    cache.put(_entry("ana"), cache.generation())
    body = cache.get("ana")
    assert body is not None and body.user_id == "ana"
    assert cache.get("bo") is None


def test_byte_bound_and_ttl() -> None:
    one = _entry("x").nbytes
    clock = [0.0]
    cache = _cache(max_bytes=int(one * 2.5), ttl_s=10.0, clock=clock)
    for user in ("a", "b", "c"):
        cache.put(_entry(user), cache.generation())
    assert cache.stats()["entries"] == 2 and cache.get("a") is None  # least recently used went first
    clock[0] = 11.0
    assert cache.get("c") is None  # older than the TTL


def test_disabled_and_suspended_caches_store_nothing() -> None:
    disabled = _cache(max_bytes=0)
    assert not disabled.enabled and not disabled.put(_entry("a"), disabled.generation())
    cache = _cache()
    cache.clear(suspend=True)
    assert not cache.put(_entry("a"), cache.generation())
    cache.clear(suspend=False)
    assert cache.put(_entry("a"), cache.generation())


def test_entries_hold_no_window_models_when_their_json_round_trips() -> None:
    entry = build_learner_progress("ana", learner_window_points(), baseline_weeks=2)
    assert entry.weekly is None  # weekly windows are parsed back from their JSON for a summary before the last one
    start, end = START, START + timedelta(days=21)
    assert entry.render(("weekly",), start, end) == _model_body("ana", learner_window_points(), ("weekly",), start, end)


def test_window_models_are_kept_when_their_json_does_not_round_trip() -> None:
    windows = learner_window_points()
    windows["weekly"][1] = windows["weekly"][1].model_copy(update={"mean_silent_pause_s": float("nan")})
    entry = build_learner_progress("ana", windows, baseline_weeks=2)
    assert entry.weekly is not None  # NaN serialises as null: parsing it back would change the summary
    for end in (START + timedelta(days=21), START + timedelta(days=91)):
        assert entry.render(WINDOW_KINDS, START, end) == _model_body("ana", windows, WINDOW_KINDS, START, end)
