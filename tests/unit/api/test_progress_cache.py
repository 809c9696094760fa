"""The progress cache's pure parts: the pre-serialised body equals the model's, the byte bound, the
generation rule that keeps a fill which raced an invalidation out of the cache, gzip bodies and their memo, and
stale-while-revalidate of invalidated learners (a stand-in read held at a gate; no engine needed)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.encoding import accepts_gzip, gzip_body
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
    cache.invalidate(["ana"])  # …the change feed sees new windows of the learner meanwhile…
    assert not cache.put(_entry("ana"), generation)  # …so its possibly older answer is not kept
    assert cache.get("ana") is None
    assert cache.put(_entry("ana"), cache.generation())
    assert cache.get("ana") is not None


def test_a_fill_is_refused_only_for_the_learners_that_changed_or_after_a_clear() -> None:
    cache = _cache()
    generation = cache.generation()
    cache.invalidate(["someone-else"])  # another learner's windows changed: ana's read is still current
    assert cache.put(_entry("ana"), generation)
    generation = cache.generation()
    cache.clear()  # the whole table changed (replay, truncate, failed poll): every read in flight may be older
    assert not cache.put(_entry("ana"), generation) and not cache.put(_entry("bo"), generation)


def test_invalidate_drops_only_the_named_learners() -> None:
    cache = _cache()
    for user in ("ana", "bo", "cy"):
        cache.put(_entry(user), cache.generation())
    assert cache.invalidate(["bo", "not-cached"]) == 1
    assert cache.get("bo") is None and cache.get("ana") is not None and cache.get("cy") is not None
    cache.clear()
    assert cache.stats()["entries"] == cache.stats()["bytes"] == 0


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


# --- gzip bodies (api.encoding) ---------------------------------------------------------------------------------


def test_gzip_body_is_the_rendered_body_compressed_and_remembered_per_entry_and_request() -> None:
    cache = ProgressCache(_NoReader(), baseline_weeks=2, max_bytes=10**7, ttl_s=60.0, gzip_max_bytes=10**6)  # type: ignore[arg-type]
    entry = build_learner_progress("ana", learner_window_points(), baseline_weeks=2)
    start, end = START, START + timedelta(days=91)
    plain, gzipped = cache.body(entry, WINDOW_KINDS, start, end, gzip=False, remember=True)
    assert not gzipped and plain == entry.render(WINDOW_KINDS, start, end)
    first, gzipped = cache.body(entry, WINDOW_KINDS, start, end, gzip=True, remember=True)
    assert gzipped and gzip.decompress(first) == plain and first == gzip_body(plain)
    again, _ = cache.body(entry, WINDOW_KINDS, start, end, gzip=True, remember=True)
    assert again is first  # remembered, not compressed again
    assert cache.stats()["gzip_bodies"] == 1 and cache.stats()["gzip_bytes"] == len(first)
    rebuilt = build_learner_progress("ana", learner_window_points(), baseline_weeks=2)  # e.g. after new windows
    other, _ = cache.body(rebuilt, WINDOW_KINDS, start, end, gzip=True, remember=True)
    assert other is not first and other == first and cache.stats()["gzip_bodies"] == 2  # a new entry, a new key
    once, gzipped = cache.body(entry, ("daily",), start, end, gzip=True, remember=False)  # 'to' = now: not kept
    assert gzipped and gzip.decompress(once) == entry.render(("daily",), start, end)
    assert cache.stats()["gzip_bodies"] == 2


def test_the_gzip_memo_is_bounded_in_bytes() -> None:
    entry = build_learner_progress("ana", learner_window_points(), baseline_weeks=2)
    cache = ProgressCache(_NoReader(), baseline_weeks=2, max_bytes=10**7, ttl_s=60.0, gzip_max_bytes=10**6)  # type: ignore[arg-type]
    one, _ = cache.body(entry, WINDOW_KINDS, START, START + timedelta(days=91), gzip=True, remember=True)
    bounded = ProgressCache(_NoReader(), baseline_weeks=2, max_bytes=10**7, ttl_s=60.0, gzip_max_bytes=len(one) * 2)  # type: ignore[arg-type]
    for days in (30, 60, 91):
        bounded.body(entry, WINDOW_KINDS, START, START + timedelta(days=days), gzip=True, remember=True)
    assert bounded.stats()["gzip_bytes"] <= len(one) * 2 and bounded.stats()["gzip_bodies"] < 3
    off = ProgressCache(_NoReader(), baseline_weeks=2, max_bytes=10**7, ttl_s=60.0, gzip_max_bytes=0)  # type: ignore[arg-type]
    body, gzipped = off.body(entry, WINDOW_KINDS, START, START + timedelta(days=91), gzip=True, remember=True)
    assert gzipped and gzip.decompress(body) == entry.render(WINDOW_KINDS, START, START + timedelta(days=91))
    assert off.stats()["gzip_bodies"] == 0


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("gzip, deflate, br", True),
        ("deflate;q=1.0, gzip;q=0.5", True),
        ("br, x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=nope", False),
        ("identity", False),
        ("deflate, br", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # gzip named with q=0: the wildcard does not bring it back
        ("br;q=1, *;q=0.1", True),
    ],
)
def test_accept_encoding(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted
    assert accepts_gzip(header) is accepted  # the remembered answer


# --- stale-while-revalidate ---------------------------------------------------------------------------------


class _GatedFetch:
    """A stand-in for the ClickHouse read of one learner: counts reads, and each read waits until ``gate`` opens;
    serves ``windows`` (replaced by the test to play new data)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.reads = 0
        self.windows = learner_window_points(14)
        self.fail = False

    def __call__(self, reader: Any, user_id: str) -> dict[WindowKind, list[WindowPoint]]:
        self.reads += 1
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("ClickHouse unavailable")
        return self.windows


@contextmanager
def _swr(stale_s: float = 5.0) -> Iterator[tuple[ProgressCache, _GatedFetch, list[float]]]:
    """A stale-while-revalidate cache on a gated fetch and a test clock (``clock[0]``, seconds); on exit the gate
    opens and the cache closes."""
    fetch, clock = _GatedFetch(), [0.0]
    reader: Any = _NoReader()
    cache = ProgressCache(
        reader, baseline_weeks=2, max_bytes=10**7, ttl_s=600.0, timer=lambda: clock[0], stale_s=stale_s, fetch=fetch
    )
    try:
        yield cache, fetch, clock
    finally:
        fetch.gate.set()
        cache.close()


def _until(condition: Any) -> None:
    """Wait for the reload thread (a deadline only against a hang, not a timing assertion)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the reload thread never got there"
        time.sleep(0.005)


def _word_counts(entry: LearnerProgress | None) -> list[int]:
    assert entry is not None
    return [json.loads(f)["word_count"] for f in entry.fragments("daily")]


def test_an_invalidated_learner_is_served_its_previous_entry_until_one_coalesced_reload_lands() -> None:
    with _swr() as (cache, fetch, clock):
        old = _entry("ana")
        cache.put(old, cache.generation())
        fetch.windows = {
            **fetch.windows,
            "daily": [w.model_copy(update={"word_count": 4242}) for w in fetch.windows["daily"]],
        }
        assert cache.invalidate(["ana"]) == 1
        assert fetch.entered.wait(30)  # the reload is reading (held at the gate)
        assert cache.get("ana") is old and cache.stats()["stale"] == 1  # readers keep the previous entry
        for _ in range(3):  # more changes while the read runs: one more read, not three
            cache.invalidate(["ana"])
        assert cache.get("ana") is old and fetch.reads == 1
        fetch.gate.set()
        _until(lambda: cache.stats()["stale"] == 0)
        fresh = cache.get("ana")
        assert fresh is not old and set(_word_counts(fresh)) == {4242}
        assert fetch.reads == 2  # the first read may predate the later changes: superseded, read once more
        assert cache.reloads == {"stored": 1, "superseded": 1, "failed": 0}


def test_learners_invalidated_while_queued_are_read_once() -> None:
    with _swr() as (cache, fetch, clock):
        for user in ("ana", "bo", "cy"):
            cache.put(_entry(user), cache.generation())
        cache.invalidate(["ana", "bo"])
        _until(lambda: fetch.reads == 2)  # ana and bo are being read by the two reload threads (held at the gate) …
        for _ in range(5):
            cache.invalidate(["cy"])  # … cy is queued behind them and changed again and again meanwhile
        fetch.gate.set()
        _until(lambda: cache.stats()["stale"] == 0)
        assert fetch.reads == 3 and cache.reloads["stored"] == 3


def test_a_stale_entry_is_dropped_after_stale_s_or_when_its_reload_fails() -> None:
    with _swr(stale_s=5.0) as (cache, fetch, clock):
        old = _entry("ana")
        cache.put(old, cache.generation())
        cache.invalidate(["ana"])
        assert fetch.entered.wait(30)
        clock[0] = 4.9
        assert cache.get("ana") is old
        cache.invalidate(["ana"])  # a later change does not extend the stale period
        clock[0] = 5.0
        assert cache.get("ana") is None  # too stale: readers read ClickHouse themselves
        fetch.fail = True
        cache.put(_entry("bo"), cache.generation())
        cache.invalidate(["bo"])
        fetch.gate.set()
        _until(lambda: cache.reloads["failed"] >= 1)
        _until(lambda: cache.stats()["stale"] == 0)
        assert cache.get("bo") is None  # its reload failed: no stale entry is served any longer


def test_without_stale_s_an_invalidation_drops_the_entry() -> None:
    with _swr(stale_s=0.0) as (cache, fetch, _clock):
        cache.put(_entry("ana"), cache.generation())
        assert cache.invalidate(["ana"]) == 1 and cache.get("ana") is None and fetch.reads == 0


def test_clear_drops_stale_entries_and_queued_reloads() -> None:
    with _swr() as (cache, fetch, clock):
        cache.put(_entry("ana"), cache.generation())
        cache.put(_entry("bo"), cache.generation())
        cache.put(_entry("cy"), cache.generation())
        cache.invalidate(["ana", "bo", "cy"])
        _until(lambda: fetch.reads == 2)  # ana and bo are being read, cy is queued
        cache.clear()
        fetch.gate.set()
        _until(lambda: cache.reloads["superseded"] == 2)  # the reads in flight may predate the clear: not stored
        assert cache.get("ana") is None and cache.get("bo") is None and cache.get("cy") is None
        assert fetch.reads == 2 and cache.reloads["stored"] == 0  # cy's queued reload was dropped
