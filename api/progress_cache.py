"""The per-learner cache of ``GET /v1/users/{user_id}/progress`` and the change feed that invalidates it.

**What is cached.** One :class:`LearnerProgress` per learner: every window of the learner (all kinds, all time),
each already serialised to JSON bytes and sorted by ``window_start``, plus the summary over all its weekly windows,
serialised. A request of any kinds and ``[from, to)`` range is answered from it by bisecting the start times and
joining the bytes (:meth:`LearnerProgress.render`); the body is byte-for-byte what
``ProgressResponse.model_dump_json(by_alias=True)`` gives for the same windows (checked by a unit test), so the
cache changes the latency, not the answer. Requests without ``to`` (``to`` = now) are served from the same entry.

**Bound.** At most ``COACH_API_PROGRESS_CACHE_MAX_BYTES`` bytes of entries (the sum of the serialised windows of
the cached learners; least recently used learners are evicted first) and each entry for at most
``COACH_API_PROGRESS_CACHE_TTL_S`` seconds (a safety net: the change feed below is what keeps entries fresh).

**Invalidation** (:class:`WindowsChangeFeed`): the metric dataflow only changes ``learner_metrics_windows`` by
INSERTs (one new data part per insert), so a thread of the API polls ClickHouse's ``system.parts`` of that table
every ``COACH_API_PROGRESS_CACHE_POLL_S`` seconds. Each new part (a block number above the last one seen; a
mutation's new data version counts as new too) is read for its distinct ``user_id`` values and those learners'
entries are dropped. This works the same with embedded chDB (``coach run``: the dataflows write in the same
process) and with a ClickHouse server (``coach serve api`` runs apart from the dataflows), needs no change to the
writers, and does not depend on the writers' clocks (``computed_at``). A new table behind the name (``coach replay``
swaps tables with ``EXCHANGE TABLES``), parts that disappeared without a merge (``TRUNCATE``, ``DROP PARTITION``)
or a failed poll drop the whole cache; while polls fail nothing is cached (requests read ClickHouse).

**Staleness bound.** Once an INSERT into ``learner_metrics_windows`` has returned, a read of one of its learners
shows the new rows at most one poll interval plus one poll's duration later (``COACH_API_PROGRESS_CACHE_POLL_S``,
1 s by default, plus a few milliseconds): a request that started reading ClickHouse before the poll noticed the
change does not store its (possibly older) answer (a generation counter, see :meth:`ProgressCache.put`). Not
covered: rows changed without a new part or data version (lightweight updates with patch parts, not used by this
platform's writers) become visible within the TTL.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import TTLCache
from pydantic import TypeAdapter

from api.analytics import ClickHouseReader, fetch_learner_windows, utc
from api.metrics import PROGRESS_CACHE_EVENTS, PROGRESS_CACHE_INVALIDATIONS
from api.models import WINDOW_KINDS, WindowKind, WindowPoint
from api.progress import summarize

__all__ = ["LearnerProgress", "ProgressCache", "WindowsChangeFeed", "build_learner_progress"]

log = logging.getLogger(__name__)

_DATETIME_JSON = TypeAdapter(datetime)
_STR_JSON = TypeAdapter(str)
_EMPTY: tuple[tuple[int, ...], tuple[bytes, ...]] = ((), ())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    """Microseconds since the epoch, exact (integer arithmetic: 'from'/'to' may carry microseconds)."""
    return (utc(value) - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class LearnerProgress:
    """Everything the progress endpoint needs for one learner, pre-serialised.

    ``series``: per window kind, the windows' start times (µs since the epoch, ascending) and, at the same
    index, each window serialised as a JSON object (``WindowPoint``); ``weekly``: the weekly windows as models
    (for a summary up to a ``to`` before the last weekly window), or None when they are parsed back from their JSON
    in ``series`` on demand, which :func:`build_learner_progress` chooses when every weekly window's JSON parses
    back to an equal model (so the entry holds no model objects: the garbage collector then has almost nothing to
    walk in an entry; ~14 models per learner took a full collection ~60 ms over 1,000 cached learners);
    ``summary_json``: the summary over all weekly windows;
    ``last_weekly_start_us``: the newest weekly window's start (``None`` without weekly windows);
    ``baseline_weeks``: the summary's baseline length; ``nbytes``: approximate memory of the entry, bytes.
    """

    user_id: str
    series: dict[WindowKind, tuple[tuple[int, ...], tuple[bytes, ...]]]
    weekly: tuple[WindowPoint, ...] | None
    summary_json: bytes
    last_weekly_start_us: int | None
    baseline_weeks: int
    nbytes: int

    def render(self, kinds: Sequence[WindowKind], start: datetime, end: datetime) -> bytes:
        """The JSON body of the progress response for ``kinds`` (in this order) and windows starting in
        ``[start, end)``: the same bytes as ``ProgressResponse(...).model_dump_json(by_alias=True)``."""
        start_us, end_us = _us(start), _us(end)
        parts = [
            b'{"user_id":',
            _STR_JSON.dump_json(self.user_id),
            b',"from":',
            _DATETIME_JSON.dump_json(start),
            b',"to":',
            _DATETIME_JSON.dump_json(end),
            b',"series":{',
        ]
        for index, kind in enumerate(kinds):
            starts, fragments = self.series.get(kind, _EMPTY)
            lo, hi = bisect.bisect_left(starts, start_us), bisect.bisect_left(starts, end_us)
            parts += [b"," if index else b"", b'"', kind.encode(), b'":[', b",".join(fragments[lo:hi]), b"]"]
        parts += [b'},"summary":', self._summary(end_us), b"}"]
        return b"".join(parts)

    def _summary(self, end_us: int) -> bytes:
        if self.last_weekly_start_us is None or self.last_weekly_start_us < end_us:
            return self.summary_json  # every weekly window starts before 'to'
        starts, fragments = self.series.get("weekly", _EMPTY)
        before = bisect.bisect_left(starts, end_us)
        if self.weekly is not None:
            weekly = list(self.weekly[:before])
        else:
            weekly = [WindowPoint.model_validate_json(fragment) for fragment in fragments[:before]]
        summary = summarize(weekly, baseline_weeks=self.baseline_weeks)
        return summary.__pydantic_serializer__.to_json(summary)


def build_learner_progress(
    user_id: str, windows: dict[WindowKind, list[WindowPoint]], *, baseline_weeks: int
) -> LearnerProgress:
    """A :class:`LearnerProgress` from the learner's windows per kind (any order; one per kind and start)."""
    series: dict[WindowKind, tuple[tuple[int, ...], tuple[bytes, ...]]] = {}
    nbytes = 0
    for kind in WINDOW_KINDS:
        ordered = sorted(windows.get(kind, []), key=lambda w: w.window_start)
        fragments = tuple(w.__pydantic_serializer__.to_json(w) for w in ordered)
        series[kind] = (tuple(_us(w.window_start) for w in ordered), fragments)
        nbytes += sum(len(f) for f in fragments) + 120 * len(ordered)  # bytes objects and tuples' overhead
    weekly = tuple(sorted(windows.get("weekly", []), key=lambda w: w.window_start))
    summary = summarize(weekly, baseline_weeks=baseline_weeks)
    summary_json = summary.__pydantic_serializer__.to_json(summary)
    round_trips = all(
        WindowPoint.model_validate_json(fragment) == window
        for fragment, window in zip(series["weekly"][1], weekly, strict=True)
    )  # e.g. a NaN serialises as null: then the models are kept
    return LearnerProgress(
        user_id=user_id,
        series=series,
        weekly=None if round_trips else weekly,
        summary_json=summary_json,
        last_weekly_start_us=_us(weekly[-1].window_start) if weekly else None,
        baseline_weeks=baseline_weeks,
        nbytes=nbytes + len(summary_json) + 1000 * len(weekly) + 500,
    )


class ProgressCache:
    """Thread-safe LRU + TTL cache of :class:`LearnerProgress` by learner id, bounded in bytes.

    ``max_bytes``: total ``nbytes`` of the entries (0 disables caching: every :meth:`load` reads ClickHouse);
    ``ttl_s``: longest life of an entry, seconds; ``timer``: the clock of the TTL (monotonic seconds).
    """

    def __init__(
        self,
        reader: ClickHouseReader,
        *,
        baseline_weeks: int,
        max_bytes: int,
        ttl_s: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._baseline_weeks = baseline_weeks
        self.enabled = max_bytes > 0
        self._entries: TTLCache[str, LearnerProgress] = TTLCache(
            maxsize=max(max_bytes, 1), ttl=ttl_s, timer=timer, getsizeof=lambda entry: entry.nbytes
        )
        self._lock = threading.Lock()
        self._generation = 0
        self._suspended = False

    def get(self, user_id: str) -> LearnerProgress | None:
        """The cached entry of ``user_id`` (counted as a hit), or None (counted as a miss)."""
        with self._lock:
            entry = self._entries.get(user_id)
        PROGRESS_CACHE_EVENTS.labels("hit" if entry is not None else "miss").inc()
        return entry

    def peek(self, user_id: str) -> LearnerProgress | None:
        """As :meth:`get`, but a miss is not counted (the caller falls back to a path that calls :meth:`get`)."""
        with self._lock:
            entry = self._entries.get(user_id)
        if entry is not None:
            PROGRESS_CACHE_EVENTS.labels("hit").inc()
        return entry

    def load(self, user_id: str) -> LearnerProgress:
        """Read the learner's windows from ClickHouse, build the entry and cache it (unless the learner's data
        changed while reading, see :meth:`put`). ClickHouse errors propagate. Blocking: call it from a thread."""
        generation = self.generation()
        windows = fetch_learner_windows(self._reader, user_id)
        entry = build_learner_progress(user_id, windows, baseline_weeks=self._baseline_weeks)
        self.put(entry, generation)
        return entry

    def generation(self) -> int:
        """The invalidation generation; take it *before* reading ClickHouse and pass it to :meth:`put`."""
        with self._lock:
            return self._generation

    def put(self, entry: LearnerProgress, generation: int) -> bool:
        """Cache ``entry`` unless an invalidation happened since ``generation`` was taken (its data may predate
        the change) or caching is off/suspended; an entry larger than the whole cache is not kept. Returns
        whether it was stored."""
        with self._lock:
            if not self.enabled or self._suspended or generation != self._generation:
                PROGRESS_CACHE_EVENTS.labels("fill_skipped").inc()
                return False
            try:
                self._entries[entry.user_id] = entry
            except ValueError:  # larger than max_bytes
                return False
            return True

    def invalidate(self, user_ids: Iterable[str]) -> int:
        """Drop the entries of ``user_ids`` and start a new generation. Returns how many entries were dropped."""
        dropped = 0
        with self._lock:
            self._generation += 1
            for user_id in user_ids:
                if self._entries.pop(user_id, None) is not None:
                    dropped += 1
        PROGRESS_CACHE_INVALIDATIONS.inc(dropped)
        return dropped

    def clear(self, *, suspend: bool | None = None) -> None:
        """Drop every entry and start a new generation; ``suspend=True`` stops caching until
        ``clear(suspend=False)`` (used while the change feed cannot vouch for freshness)."""
        with self._lock:
            self._generation += 1
            PROGRESS_CACHE_INVALIDATIONS.inc(len(self._entries))
            self._entries.clear()
            if suspend is not None:
                self._suspended = suspend

    def stats(self) -> dict[str, int]:
        """``entries`` and ``bytes`` currently cached."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": int(self._entries.currsize)}


_PARTS_SQL = """
SELECT name, rows, min_block_number, greatest(max_block_number, data_version) AS version,
       (SELECT toString(uuid) FROM system.tables WHERE database = {db:String} AND name = {table:String}) AS table_uuid
FROM system.parts
WHERE database = {db:String} AND table = {table:String} AND active
"""

_PART_USERS_SQL = """
SELECT _part AS part, groupUniqArray(user_id) AS users
FROM {table}
WHERE _part IN {{parts:Array(String)}}
GROUP BY part
"""


class WindowsChangeFeed:
    """Invalidates :class:`ProgressCache` entries of learners whose windows changed, by polling ``system.parts``
    of ``learner_metrics_windows`` every ``interval_s`` seconds in a daemon thread (see the module docstring).

    :meth:`poll` runs one round (also called by tests); :meth:`start`/:meth:`stop` run the thread.
    """

    TABLE = "learner_metrics_windows"

    def __init__(self, reader: ClickHouseReader, cache: ProgressCache, *, interval_s: float) -> None:
        self._reader = reader
        self._cache = cache
        self.interval_s = interval_s
        self._table_uuid: str | None = None
        self._version = -1  # highest block number / data version already accounted for
        self._bottom: int | None = None  # lowest block number of the active parts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def poll(self) -> int:
        """One round: returns the number of learners whose entries were invalidated (-1: the whole cache was
        dropped). ClickHouse errors propagate (the thread then drops and suspends the cache)."""
        parts = self._reader.rows(
            _PARTS_SQL, {"db": self._reader.database, "table": self.TABLE}, name="progress_cache_poll"
        )
        table_uuid = str(parts[0]["table_uuid"]) if parts else self._table_uuid
        top = max((int(p["version"]) for p in parts), default=0)
        bottom = min((int(p["min_block_number"]) for p in parts), default=self._bottom)
        if self._version < 0 or table_uuid != self._table_uuid or top < self._version or bottom != self._bottom:
            # First poll (nothing is cached from before it), another table, or data removed: start over.
            first = self._version < 0
            self._table_uuid, self._version, self._bottom = table_uuid, top, bottom
            self._cache.clear()
            if not first:
                log.info("progress cache dropped: %s changed wholesale", self.TABLE)
            return -1
        fresh = [p for p in parts if int(p["version"]) > self._version and int(p["rows"]) > 0]
        if not fresh:
            return 0
        names = [str(p["name"]) for p in fresh]
        found = self._reader.rows(
            _PART_USERS_SQL.format(table=self._reader.table(self.TABLE)), {"parts": names}, name="progress_cache_poll"
        )
        users = {user for row in found for user in row["users"]}
        dropped = len(users)
        self._cache.invalidate(users)
        if {str(row["part"]) for row in found} == set(names):
            self._version = top
        # else: a new part was merged away between the two queries; its rows are in a merged part whose version
        # is above self._version, so the next round reads that part (more learners than needed, none missed).
        return dropped

    def start(self) -> None:
        """Poll once now (so the cache starts in a known state), then every ``interval_s`` in a daemon thread."""
        self._run_once()
        self._thread = threading.Thread(target=self._loop, name="progress-cache-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits for a running poll)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._run_once()

    def _run_once(self) -> None:
        try:
            self.poll()
        except Exception as exc:  # noqa: BLE001 - any failure means freshness cannot be vouched for
            if not self._failing:
                log.warning("progress cache change feed failed, caching suspended: %s", exc)
            self._failing = True
            self._version = -1  # the next successful poll starts over
            self._cache.clear(suspend=True)
            return
        if self._failing:
            log.info("progress cache change feed recovered")
            self._failing = False
            self._cache.clear(suspend=False)
