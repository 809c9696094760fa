"""Settings of the read-only progress API (environment variables ``COACH_API_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.http_server import HttpServerSettings

__all__ = ["ApiSettings"]


class ApiSettings(HttpServerSettings):
    """Binding, pools, paging and progress defaults of the progress API."""

    model_config = SettingsConfigDict(env_prefix="COACH_API_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    """bind address"""
    port: int = 8001
    """progress API port"""
    pg_pool_min: int = Field(default=1, ge=0)
    """PostgreSQL connections kept open"""
    pg_pool_max: int = Field(default=8, ge=1)
    """PostgreSQL connections at most"""
    pg_timeout_s: float = Field(default=5.0, gt=0)
    """wait for a pooled PostgreSQL connection, seconds"""
    clickhouse_readonly: int = Field(default=1, ge=1, le=2)
    """the ClickHouse 'readonly' setting sent with every query (1: reads only; 2: reads and SET, for servers whose users
    must change settings)"""
    clickhouse_pool_size: int = Field(default=4, ge=1)
    """HTTP ClickHouse clients at most (one per request thread); embedded chDB always uses the process's one client,
    serialised"""
    principal_cache_ttl_s: float = Field(default=5.0, ge=0)
    """how long a resolved bearer token is reused, seconds (a revoked key stops working at most this late; 0 looks every
    request up)"""
    progress_cache_max_bytes: int = Field(default=256 * 2**20, ge=0)
    """memory bound of the per-learner progress cache, bytes (about 150 KB per learner with 100 days of windows; least
    recently used learners go first; 0 = no cache)"""
    progress_cache_ttl_s: float = Field(default=300.0, gt=0)
    """longest life of a cached learner, seconds (a safety net; changes are picked up by the change feed within
    COACH_API_PROGRESS_CACHE_POLL_S)"""
    progress_cache_poll_s: float = Field(default=1.0, gt=0, le=60)
    """how often new windows are looked for in ClickHouse, seconds; a read shows windows written at most this long (plus
    one poll, plus one reload of the learner while COACH_API_PROGRESS_CACHE_STALE_S > 0) before it"""
    progress_cache_stale_s: float = Field(default=5.0, ge=0)
    """once new windows of a cached learner are seen, its previous entry is still served while one background reload of
    the learner (coalesced) runs, for at most this many seconds, then dropped; the staleness bound is then
    COACH_API_PROGRESS_CACHE_POLL_S plus one poll plus one reload, or, when the reload takes longer than this, plus this
    and one read by the next reader. 0: the entry is dropped at once and readers read ClickHouse until one fills it"""
    progress_gzip_max_bytes: int = Field(default=64 * 2**20, ge=0)
    """memory bound of the gzip-compressed progress bodies remembered for clients sending 'Accept-Encoding: gzip' (one
    per learner and request with an explicit 'to'; least recently used first), bytes; 0 compresses every such response
    (what compressing each response costs a warm reader, in p99, is measured in bench/RESULTS.md, API)"""
    gc_young_threshold: int = Field(default=200_000, ge=0)
    """allocations between young collections of Python's garbage collector in the API process (CPython's default 700 ran
    ~6 collections a second under warm load, pauses up to 26 ms, up to 86 ms while entries were rebuilt; 200,000: none
    in the benchmark); 0 keeps the interpreter's setting"""
    page_size: int = Field(default=20, ge=1, le=200)
    """default submissions per page"""
    max_page_size: int = Field(default=100, ge=1, le=1000)
    """largest page"""
    default_range_days: int = Field(default=91, ge=1)
    """progress series cover this many days up to 'to' when 'from' is not given"""
    max_range_days: int = Field(default=3 * 366, ge=1)
    """longest 'from'..'to' span accepted, days"""
    baseline_weeks: int = Field(default=2, ge=1, le=12)
    """the learner's first weekly windows that form the baseline of the progress summary (compared with the same number
    of most recent weeks)"""
    max_requests_in_flight: int = Field(default=512, ge=1)
    """requests answered at once; more get 503 with Retry-After: 1 (/healthz, /readyz, /metrics exempt)"""
    page_cache_max_entries: int = Field(default=2048, ge=0)
    """rendered progress pages kept (per learner, window kind and range; least recently used first; 0 renders every
    request); an entry lives as long as the learner's progress-cache entry it was built from (new windows invalidate
    both) and at most COACH_API_PAGE_CACHE_TTL_S"""
    page_cache_ttl_s: float = Field(default=60.0, gt=0)
    """longest life of a rendered page, seconds (bounds the drift of a page without 'to', whose range ends now)"""
    page_render_threads: int = Field(default=1, ge=1, le=8)
    """threads of the dedicated executor rendering page charts (matplotlib), apart from the shared request thread
    pool"""
    page_render_queue: int = Field(default=16, ge=1)
    """distinct pages waiting to be rendered at most; more get 503 with Retry-After (identical concurrent requests share
    one rendering)"""
