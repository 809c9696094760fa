"""The per-learner cache of ``GET /v1/users/{user_id}/progress`` and the change feed that invalidates it.

**What is cached.** One :class:`LearnerProgress` per learner (and, for clients that accept gzip, the compressed
bodies of the requests with an explicit ``to``, see :meth:`ProgressCache.body`): every window of the learner (all
kinds, all time), each already serialised to JSON bytes and sorted by ``window_start``, plus the summary over all
its weekly windows, serialised. A request of any kinds and ``[from, to)`` range is answered from it by bisecting
the start times and slicing the bytes (:meth:`LearnerProgress.render`); the body is byte-for-byte what
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
shows the new rows at most one poll interval plus one poll's duration plus one reload of the learner later
(``COACH_API_PROGRESS_CACHE_POLL_S``, 1 s by default; the reload is stale-while-revalidate's, bounded by
``COACH_API_PROGRESS_CACHE_STALE_S``, 5 s by default, after which the previous entry is dropped and the next
reader reads ClickHouse itself: at worst the poll interval + one poll + that + one read; with
``COACH_API_PROGRESS_CACHE_STALE_S=0`` the bound is the poll interval plus one poll, as readers then miss): a
request that started reading ClickHouse before the poll noticed the change does not store its (possibly older)
answer (per-learner invalidation generations, see :meth:`ProgressCache.put`). Measured under the benchmark's
writes (bench/api.py, 20 learners/s changed): ~0.1-1.3 s at the median, up to 3.3-6.7 s when reloads queue. Not
covered: rows changed without a new part or data version (lightweight updates with patch parts, not used by this
platform's writers) become visible within the TTL.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import LRUCache, TTLCache
from pydantic import TypeAdapter

from api.analytics import ClickHouseReader, fetch_learner_windows, utc
from api.encoding import GZIP_LEVEL, GZIP_LEVEL_UNREMEMBERED, gzip_body
from api.models import WINDOW_KINDS, WindowKind, WindowPoint
from api.progress import summarize
from api.telemetry import PROGRESS_CACHE_EVENTS, PROGRESS_CACHE_INVALIDATIONS

__all__ = ["LearnerProgress", "ProgressCache", "WindowsChangeFeed", "build_learner_progress"]

log = logging.getLogger(__name__)

_DATETIME_JSON = TypeAdapter(datetime)
_STR_JSON = TypeAdapter(str)
_Series = tuple[tuple[int, ...], bytes, tuple[int, ...]]
_EMPTY: _Series = ((), b"", (0,))
_KIND_KEYS: dict[str, bytes] = {kind: b'"' + kind.encode() + b'":[' for kind in WINDOW_KINDS}
_SERIALS = itertools.count(1)
_RELOAD_THREADS = 2
"""Reload threads of stale-while-revalidate: one reads ClickHouse while the other builds an entry (measured under the
benchmark's writes, one thread fell behind the 20 invalidated learners/s; embedded chDB serialises the reads)."""
_CHANGED_MAX = 65_536
"""Learners whose last invalidation generation is remembered (for :meth:`ProgressCache.put`); an older one forgotten
raises the floor below which every fill is refused, so forgetting only costs refused fills, never a stale one."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    """Microseconds since the epoch, exact (integer arithmetic: 'from'/'to' may carry microseconds)."""
    return (utc(value) - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class LearnerProgress:
    """Everything the progress endpoint needs for one learner, pre-serialised.

    ``series``: per window kind, the windows' start times (µs since the epoch, ascending), the windows
    serialised as JSON objects (``WindowPoint``) in that order, each followed by a comma, in one ``bytes``, and the
    offset of each window's JSON in it (one more offset at the end: the length), so the JSON array of windows
    ``lo..hi`` is one slice, ``joined[offsets[lo]:offsets[hi] - 1]`` (rendering copies it once instead of joining
    one object per window); ``serial``: a number unique to this entry in the process (keys of encoded bodies
    remembered for it, see :meth:`ProgressCache.body`); ``weekly``: the weekly windows as models
    (for a summary up to a ``to`` before the last weekly window), or None when they are parsed back from their JSON
    in ``series`` on demand, which :func:`build_learner_progress` chooses when every weekly window's JSON parses
    back to an equal model (so the entry holds no model objects: the garbage collector then has almost nothing to
    walk in an entry; ~14 models per learner took a full collection ~60 ms over 1,000 cached learners);
    ``summary_json``: the summary over all weekly windows;
    ``last_weekly_start_us``: the newest weekly window's start (``None`` without weekly windows);
    ``baseline_weeks``: the summary's baseline length; ``nbytes``: approximate memory of the entry, bytes.
    """

    user_id: str
    series: dict[WindowKind, _Series]
    serial: int
    weekly: tuple[WindowPoint, ...] | None
    summary_json: bytes
    last_weekly_start_us: int | None
    baseline_weeks: int
    nbytes: int

    def render(self, kinds: Sequence[WindowKind], start: datetime, end: datetime) -> bytes:
        """The JSON body of the progress response for ``kinds`` (in this order) and windows starting in
        ``[start, end)``: the same bytes as ``ProgressResponse(...).model_dump_json(by_alias=True)``."""
        start_us, end_us = _us(start), _us(end)
        parts: list[bytes | memoryview] = [
            b'{"user_id":',
            _STR_JSON.dump_json(self.user_id),
            b',"from":',
            _DATETIME_JSON.dump_json(start),
            b',"to":',
            _DATETIME_JSON.dump_json(end),
            b',"series":{',
        ]
        for index, kind in enumerate(kinds):
            starts, joined, offsets = self.series.get(kind, _EMPTY)
            lo, hi = bisect.bisect_left(starts, start_us), bisect.bisect_left(starts, end_us)
            windows = memoryview(joined)[offsets[lo] : offsets[hi] - 1] if hi > lo else b""
            parts += [b"," if index else b"", _KIND_KEYS[kind], windows, b"]"]
        parts += [b'},"summary":', self._summary(end_us), b"}"]
        return b"".join(parts)

    def fragments(self, kind: WindowKind) -> list[bytes]:
        """The JSON object of each window of ``kind``, oldest first (a copy of each)."""
        _, joined, offsets = self.series.get(kind, _EMPTY)
        return [joined[offsets[i] : offsets[i + 1] - 1] for i in range(len(offsets) - 1)]

    def _summary(self, end_us: int) -> bytes:
        if self.last_weekly_start_us is None or self.last_weekly_start_us < end_us:
            return self.summary_json  # every weekly window starts before 'to'
        before = bisect.bisect_left(self.series.get(WindowKind.WEEKLY, _EMPTY)[0], end_us)
        if self.weekly is not None:
            weekly = list(self.weekly[:before])
        else:
            weekly = [
                WindowPoint.model_validate_json(fragment) for fragment in self.fragments(WindowKind.WEEKLY)[:before]
            ]
        summary = summarize(weekly, baseline_weeks=self.baseline_weeks)
        return summary.__pydantic_serializer__.to_json(summary)


def build_learner_progress(
    user_id: str, windows: dict[WindowKind, list[WindowPoint]], *, baseline_weeks: int
) -> LearnerProgress:
    """A :class:`LearnerProgress` from the learner's windows per kind (any order; one per kind and start)."""
    series: dict[WindowKind, _Series] = {}
    nbytes = 0
    weekly_fragments: list[bytes] = []
    for kind in WINDOW_KINDS:
        ordered = sorted(windows.get(kind, []), key=lambda w: w.window_start)
        fragments = [w.__pydantic_serializer__.to_json(w) for w in ordered]
        offsets = [0]
        for fragment in fragments:
            offsets.append(offsets[-1] + len(fragment) + 1)
        joined = b"".join(fragment + b"," for fragment in fragments)
        series[kind] = (tuple(_us(w.window_start) for w in ordered), joined, tuple(offsets))
        nbytes += len(joined) + 80 * len(ordered)  # the start and offset ints and their tuples' slots
        if kind == "weekly":
            weekly_fragments = fragments
    weekly = tuple(sorted(windows.get(WindowKind.WEEKLY, []), key=lambda w: w.window_start))
    summary = summarize(weekly, baseline_weeks=baseline_weeks)
    summary_json = summary.__pydantic_serializer__.to_json(summary)
    round_trips = all(
        WindowPoint.model_validate_json(fragment) == window
        for fragment, window in zip(weekly_fragments, weekly, strict=True)
    )  # e.g. a NaN serialises as null: then the models are kept
    return LearnerProgress(
        user_id=user_id,
        series=series,
        serial=next(_SERIALS),
        weekly=None if round_trips else weekly,
        summary_json=summary_json,
        last_weekly_start_us=_us(weekly[-1].window_start) if weekly else None,
        baseline_weeks=baseline_weeks,
        nbytes=nbytes + len(summary_json) + 1000 * len(weekly) + 500,
    )


class ProgressCache:
    """Thread-safe LRU + TTL cache of :class:`LearnerProgress` by learner id, bounded in bytes, with
    stale-while-revalidate for learners whose windows changed and a memo of gzip-compressed bodies.

    ``max_bytes``: total ``nbytes`` of the entries (0 disables caching: every :meth:`load` reads ClickHouse);
    ``ttl_s``: longest life of an entry, seconds; ``timer``: the clock of the TTL and of ``stale_s`` (monotonic
    seconds); ``stale_s``: how long an invalidated learner's previous entry is still served while one background
    reload of the learner runs (0: :meth:`invalidate` drops the entry, every reader then misses until one fills it);
    ``gzip_max_bytes``: memory bound of the remembered gzip bodies (:meth:`body`), bytes (0: compress per request);
    ``fetch``: reads one learner's windows (:func:`api.analytics.fetch_learner_windows`; replaceable in tests).

    **Stale-while-revalidate** (``stale_s > 0``): :meth:`invalidate` marks a cached learner stale instead of
    dropping it and queues one reload; two reload threads (started on the first one) read the learners queued, a
    learner by one thread at a time, and replace each entry when the read started after the learner's last
    invalidation. Reloads are coalesced per learner: however many times a learner is invalidated while queued, it
    is read once, plus once more if invalidated while its read runs (that read's answer may predate the change,
    so it is not stored). A stale entry is served for at most ``stale_s`` seconds after its first invalidation;
    past that, or when its reload fails, it is dropped and readers miss (and read ClickHouse themselves) as
    without stale-while-revalidate.
    """

    def __init__(
        self,
        reader: ClickHouseReader,
        *,
        baseline_weeks: int,
        max_bytes: int,
        ttl_s: float,
        timer: Callable[[], float] = time.monotonic,
        stale_s: float = 0.0,
        gzip_max_bytes: int = 0,
        fetch: Callable[[ClickHouseReader, str], dict[WindowKind, list[WindowPoint]]] = fetch_learner_windows,
    ) -> None:
        self._reader = reader
        self._baseline_weeks = baseline_weeks
        self._timer = timer
        self._fetch = fetch
        self.enabled = max_bytes > 0
        self.stale_s = stale_s
        self._entries: TTLCache[str, LearnerProgress] = TTLCache(
            maxsize=max(max_bytes, 1), ttl=ttl_s, timer=timer, getsizeof=lambda entry: entry.nbytes
        )
        self._gzip: LRUCache[tuple[int, tuple[str, ...], int, int], bytes] = LRUCache(
            maxsize=max(gzip_max_bytes, 1), getsizeof=len
        )
        self._gzip_enabled = gzip_max_bytes > 0
        self._lock = threading.Lock()
        self._generation = 0
        self._changed: OrderedDict[str, int] = OrderedDict()  # learner -> generation of its last invalidation
        self._floor = 0  # fills that started before this generation are not stored (clear(), _changed's evictions)
        self._suspended = False
        self._stale: dict[str, float] = {}  # learner -> when it was first invalidated since its entry was built
        self._pending: dict[str, None] = {}  # learners to reload, in order (an ordered set)
        self._reloading: set[str] = set()  # learners being read by a reload thread
        self._wake = threading.Condition(self._lock)
        self._reloaders: list[threading.Thread] = []
        self._closed = False
        self.reloads = {"stored": 0, "superseded": 0, "failed": 0}

    def _lookup(self, user_id: str) -> LearnerProgress | None:
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and self._stale:
                since = self._stale.get(user_id)
                if since is not None and self._timer() - since >= self.stale_s:
                    del self._entries[user_id]  # stale for too long: readers read ClickHouse again
                    entry = None
        return entry

    def get(self, user_id: str) -> LearnerProgress | None:
        """The cached entry of ``user_id`` (counted as a hit), or None (counted as a miss). A stale entry (see
        the class) counts as a hit."""
        entry = self._lookup(user_id)
        PROGRESS_CACHE_EVENTS.labels("hit" if entry is not None else "miss").inc()
        return entry

    def peek(self, user_id: str) -> LearnerProgress | None:
        """As :meth:`get`, but a miss is not counted (the caller falls back to a path that calls :meth:`get`)."""
        entry = self._lookup(user_id)
        if entry is not None:
            PROGRESS_CACHE_EVENTS.labels("hit").inc()
        return entry

    def body(
        self,
        entry: LearnerProgress,
        kinds: tuple[WindowKind, ...],
        start: datetime,
        end: datetime,
        *,
        gzip: bool,
        remember: bool,
    ) -> tuple[bytes, bool]:
        """The response body of ``entry`` for ``kinds`` and ``[start, end)`` (:meth:`LearnerProgress.render`) and
        whether it is gzip-compressed (exactly when ``gzip``: the client accepts it). With ``remember`` (the caller
        expects the same request again: ``to`` was given) a compressed body is kept, keyed by the entry and the
        request, in an LRU memo bounded by ``gzip_max_bytes`` (a new entry of the learner is a new key); else it is
        compressed at a cheaper level."""
        if not gzip:
            return entry.render(kinds, start, end), False
        remember = remember and self._gzip_enabled
        key = (entry.serial, kinds, _us(start), _us(end))
        if remember:
            with self._lock:
                known = self._gzip.get(key)
            if known is not None:
                return known, True
        compressed = gzip_body(entry.render(kinds, start, end), GZIP_LEVEL if remember else GZIP_LEVEL_UNREMEMBERED)
        if remember:
            with self._lock:
                try:
                    self._gzip[key] = compressed
                except ValueError:  # larger than the whole memo
                    pass
        return compressed, True

    def load(self, user_id: str) -> LearnerProgress:
        """Read the learner's windows from ClickHouse, build the entry and cache it (unless the learner's data
        changed while reading, see :meth:`put`). ClickHouse errors propagate. Blocking: call it from a thread."""
        generation = self.generation()
        entry = self._read(user_id)
        self.put(entry, generation)
        return entry

    def _read(self, user_id: str) -> LearnerProgress:
        """The learner's entry, read from ClickHouse now (blocking; ClickHouse errors propagate)."""
        windows = self._fetch(self._reader, user_id)
        return build_learner_progress(user_id, windows, baseline_weeks=self._baseline_weeks)

    def generation(self) -> int:
        """The invalidation generation; take it *before* reading ClickHouse and pass it to :meth:`put`."""
        with self._lock:
            return self._generation

    def _outdated(self, user_id: str, generation: int) -> bool:
        """Whether a read of ``user_id`` that started at ``generation`` may predate a change (lock held)."""
        return generation < self._floor or self._changed.get(user_id, -1) > generation

    def put(self, entry: LearnerProgress, generation: int) -> bool:
        """Cache ``entry`` unless its learner was invalidated (or the cache cleared) since ``generation`` was taken
        (its data may predate the change) or caching is off/suspended; an entry larger than the whole cache is not
        kept. Returns whether it was stored (it then is no longer stale)."""
        with self._lock:
            if not self.enabled or self._suspended or self._outdated(entry.user_id, generation):
                PROGRESS_CACHE_EVENTS.labels("fill_skipped").inc()
                return False
            self._stale.pop(entry.user_id, None)
            try:
                self._entries[entry.user_id] = entry
            except ValueError:  # larger than max_bytes
                self._entries.pop(entry.user_id, None)
                return False
            return True

    def invalidate(self, user_ids: Iterable[str]) -> int:
        """The windows of ``user_ids`` changed: start a new generation (fills of them that started before are not
        stored) and drop their entries, or, with ``stale_s > 0``, mark them stale and queue one reload each (see
        the class). Returns how many cached entries were dropped or marked stale."""
        invalidated = 0
        with self._lock:
            self._generation += 1
            now = self._timer()
            for user_id in user_ids:
                self._changed[user_id] = self._generation
                self._changed.move_to_end(user_id)
                if len(self._changed) > _CHANGED_MAX:
                    _, evicted = self._changed.popitem(last=False)
                    self._floor = max(self._floor, evicted)
                if user_id not in self._entries:
                    continue
                invalidated += 1
                if self.stale_s > 0 and not self._closed:
                    self._stale.setdefault(user_id, now)
                    self._pending[user_id] = None
                else:
                    del self._entries[user_id]
            if self._pending:
                self._start_reloader()
                self._wake.notify()
        PROGRESS_CACHE_INVALIDATIONS.inc(invalidated)
        return invalidated

    def clear(self, *, suspend: bool | None = None) -> None:
        """Drop every entry (stale ones and queued reloads too) and start a new generation; ``suspend=True`` stops
        caching until ``clear(suspend=False)`` (used while the change feed cannot vouch for freshness)."""
        with self._lock:
            self._generation += 1
            self._floor = self._generation
            self._changed.clear()
            PROGRESS_CACHE_INVALIDATIONS.inc(len(self._entries))
            self._entries.clear()
            self._gzip.clear()
            self._stale.clear()
            self._pending.clear()
            if suspend is not None:
                self._suspended = suspend

    def stats(self) -> dict[str, int]:
        """``entries`` and ``bytes`` currently cached, ``stale`` entries, ``gzip_bodies``/``gzip_bytes``
        remembered, and the background reloads so far: ``reloads_stored``, ``reloads_superseded`` (the learner
        changed again while it was read), ``reloads_failed``."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": int(self._entries.currsize),
                "stale": len(self._stale),
                "gzip_bodies": len(self._gzip),
                "gzip_bytes": int(self._gzip.currsize),
                **{f"reloads_{name}": count for name, count in self.reloads.items()},
            }

    def close(self) -> None:
        """Stop the reload thread (waits for a running reload, up to 10 s); later invalidations drop entries."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._wake.notify_all()
            threads = list(self._reloaders)
        for thread in threads:
            thread.join(timeout=10)

    def _start_reloader(self) -> None:
        """Start the reload threads if they are not running (lock held)."""
        while len(self._reloaders) < _RELOAD_THREADS:
            thread = threading.Thread(
                target=self._reload_loop, name=f"progress-cache-reload-{len(self._reloaders)}", daemon=True
            )
            self._reloaders.append(thread)
            thread.start()

    def _reload_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                user_id = next((user for user in self._pending if user not in self._reloading), None)
                if user_id is None:  # every queued learner is being read by the other thread: wait for it
                    self._wake.wait(0.05)
                    continue
                del self._pending[user_id]
                if user_id not in self._stale:
                    continue  # cleared, filled by a reader or dropped meanwhile
                generation = self._generation
                self._reloading.add(user_id)
            try:
                self._reload(user_id, generation)
            finally:
                with self._lock:
                    self._reloading.discard(user_id)
                    self._wake.notify_all()

    def _reload(self, user_id: str, generation: int) -> None:
        """Read ``user_id`` (a reload thread, lock not held) and store the entry unless superseded."""
        try:
            entry = self._read(user_id)
        except Exception as exc:  # noqa: BLE001 - readers then miss and read ClickHouse themselves
            log.warning("progress cache: reload of %s failed, its stale entry is dropped: %s", user_id, exc)
            with self._lock:
                self.reloads["failed"] += 1
                if self._stale.pop(user_id, None) is not None:
                    self._entries.pop(user_id, None)
            return
        with self._lock:
            superseded = user_id in self._pending or self._outdated(user_id, generation)
            self.reloads["superseded" if superseded else "stored"] += 1
        if not superseded:
            self.put(entry, generation)  # re-checks under the lock (a clear() may have come in between)


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
