"""Bearer-token principals: API keys created by ``coach keys create``, stored hashed in PostgreSQL.

A token is ``sc_`` + 32 random bytes (URL-safe base64), so a plain SHA-256 digest is a sufficient
at-rest hash (no password-stretching needed for high-entropy secrets; see OWASP's guidance on API
keys). The user id comes from the token, never from the request.

Failed lookups are the shared lookup's business (:func:`lookup_principal`, used by both APIs): a token that
PostgreSQL did not know is remembered for ``COACH_AUTH_NEGATIVE_TTL_S`` seconds (its retries cost no query), and
each client address may cause at most ``COACH_AUTH_FAILURES_PER_MINUTE`` failed lookups (burst
``COACH_AUTH_FAILURE_BURST``); past that, lookups from that address are refused with 429 and ``Retry-After``
before any query (:class:`FailedLookups`). The address comes from :data:`client_address`, set per request by the
HTTP layer (:mod:`runtime.http_server`'s middleware, :mod:`runtime.http_auth`).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import math
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException

__all__ = [
    "AuthSettings",
    "FailedLookups",
    "LookupsRateLimited",
    "Principal",
    "PrincipalCache",
    "Role",
    "ROLES",
    "active_principals",
    "client_address",
    "create_api_key",
    "failed_lookups",
    "hash_token",
    "lookup_principal",
    "parse_bearer",
    "revoke_api_key",
]

Role = Literal["learner", "coach", "admin"]
ROLES: tuple[Role, ...] = ("learner", "coach", "admin")
TOKEN_PREFIX = "sc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user id and the role of the key used."""

    user_id: str
    role: Role
    key_id: uuid.UUID


def hash_token(token: str) -> str:
    """Hex SHA-256 of a bearer token (what ``api_keys.token_sha256`` stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_key(conn: Any, user_id: str, role: Role) -> str:
    """Create a key for ``user_id`` with ``role`` on a psycopg connection; returns the token (shown once).

    Raises ``ValueError`` on an unknown role or an empty user id.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not user_id.strip():
        raise ValueError("user id must not be empty")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_keys (key_id, user_id, role, token_sha256) VALUES (%s, %s, %s, %s)",
        (uuid.uuid4(), user_id, role, hash_token(token)),
    )
    return token


def revoke_api_key(conn: Any, key_id: uuid.UUID) -> bool:
    """Revoke a key; returns False when no active key has that id."""
    cur = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
    return bool(cur.rowcount)


class AuthSettings(BaseSettings):
    """Failed bearer-token lookups of both APIs (environment variables ``COACH_AUTH_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_AUTH_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    negative_ttl_s: float = Field(default=30.0, ge=0)
    """how long a token PostgreSQL did not know (unknown or revoked) is answered 401 without a query, seconds (0: no
    negative cache)"""
    negative_max_entries: int = Field(default=50_000, ge=1)
    """failed tokens remembered at most (LRU)"""
    failures_per_minute: float = Field(default=30.0, gt=0)
    """failed token lookups per client address and minute; past that (and the burst) the address gets 429 with
    Retry-After, without a PostgreSQL query, until its bucket refills"""
    failure_burst: int = Field(default=30, ge=1)
    """failed lookups a client address may cause at once"""


client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)
"""The address of the HTTP client of the current request (None outside a request, or when the server did not
say): the key of the per-address failure limit. Set by :class:`runtime.http_server.LimitsMiddleware` and
:func:`runtime.http_auth.require_principal`."""


class LookupsRateLimited(HTTPException):
    """429: too many failed token lookups from this client address; ``Retry-After`` (whole seconds) attached.
    An ``HTTPException``, so both APIs render it as their JSON error without a handler of their own."""

    def __init__(self, address: str, retry_after_s: float) -> None:
        super().__init__(
            429,
            f"too many failed token lookups from {address}; retry in {retry_after_s:.0f} s",
            headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))},
        )
        self.address, self.retry_after_s = address, retry_after_s


class FailedLookups:
    """The negative cache of failed token lookups and the per-address limit on causing them (thread-safe).

    ``negative_ttl_s`` (0 disables the cache) and ``max_entries`` (LRU) bound the cache of token digests (never the
    tokens); ``failures_per_minute`` and ``burst`` are a token bucket per client address (at most
    ``max_addresses``, least recently failed dropped first). ``timer``: monotonic seconds.
    """

    def __init__(
        self,
        *,
        negative_ttl_s: float = 30.0,
        max_entries: int = 50_000,
        failures_per_minute: float = 30.0,
        burst: int = 30,
        max_addresses: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.rate = failures_per_minute / 60.0
        self.burst = float(burst)
        self.max_addresses = max_addresses
        self._timer = timer
        self._negative: OrderedDict[str, float] = OrderedDict()  # digest -> when it failed
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, updated)
        self._lock = threading.Lock()
        self.queries_saved = 0

    @classmethod
    def from_settings(cls, settings: AuthSettings | None = None) -> FailedLookups:
        """An instance configured by :class:`AuthSettings` (the environment by default)."""
        settings = settings or AuthSettings()
        return cls(
            negative_ttl_s=settings.negative_ttl_s,
            max_entries=settings.negative_max_entries,
            failures_per_minute=settings.failures_per_minute,
            burst=settings.failure_burst,
        )

    def known_bad(self, digest: str) -> bool:
        """Whether ``digest`` (:func:`hash_token`) failed less than ``negative_ttl_s`` ago (then a saved query)."""
        if self.negative_ttl_s <= 0:
            return False
        now = self._timer()
        with self._lock:
            failed = self._negative.get(digest)
            if failed is None:
                return False
            if now - failed >= self.negative_ttl_s:
                del self._negative[digest]
                return False
            self.queries_saved += 1
            return True

    def _tokens(self, address: str, now: float) -> float:
        tokens, updated = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + (now - updated) * self.rate)

    def check(self, address: str | None) -> None:
        """Raise :class:`LookupsRateLimited` when ``address`` has no failure left in its bucket (None: no limit)."""
        if address is None:
            return
        now = self._timer()
        with self._lock:
            if address in self._buckets and self._tokens(address, now) < 1.0:
                self.queries_saved += 1
                raise LookupsRateLimited(address, (1.0 - self._tokens(address, now)) / self.rate)

    def record(self, digest: str, address: str | None) -> None:
        """A lookup of ``digest`` from ``address`` found no active key: remember it and take one failure from the
        address's bucket."""
        now = self._timer()
        with self._lock:
            if self.negative_ttl_s > 0:
                self._negative[digest] = now
                self._negative.move_to_end(digest)
                while len(self._negative) > self.max_entries:
                    self._negative.popitem(last=False)
            if address is not None:
                tokens = self._tokens(address, now)
                self._buckets[address] = (max(0.0, tokens - 1.0), now)
                self._buckets.move_to_end(address)
                while len(self._buckets) > self.max_addresses:
                    self._buckets.popitem(last=False)

    def clear(self) -> None:
        """Forget every failed token and address (tests, or after bulk key creation)."""
        with self._lock:
            self._negative.clear()
            self._buckets.clear()


_failed: FailedLookups | None = None
_failed_lock = threading.Lock()


def failed_lookups() -> FailedLookups:
    """The process's :class:`FailedLookups`, built from :class:`AuthSettings` on first use (one for every API of
    the process: ``coach run`` serves both from one)."""
    global _failed
    with _failed_lock:
        if _failed is None:
            _failed = FailedLookups.from_settings()
        return _failed


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (RFC 6750 §2.1: scheme case-insensitive, one
    space, no spaces in the token), or None when absent or another scheme. The one bearer parser of both APIs and of
    the progress fast path."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def lookup_principal(
    conn: Any, token: str, *, address: str | None = None, failed: FailedLookups | None = None
) -> Principal | None:
    """The principal of an active key, or None for an unknown, malformed or revoked token.

    ``address``: the client's address (default :data:`client_address` of the current request); ``failed``: the
    failure bookkeeping (default :func:`failed_lookups`). A malformed token is None without a query; a token that
    failed within ``COACH_AUTH_NEGATIVE_TTL_S`` is None without a query; an address out of failed lookups raises
    :class:`LookupsRateLimited` (429) without a query; a query finding no active key is recorded against the token
    and the address. PostgreSQL errors propagate.
    """
    failed = failed if failed is not None else failed_lookups()
    address = address if address is not None else client_address.get()
    digest = _screen(token, failed, address)
    return None if digest is None else _query(conn, digest, failed, address)


def _screen(token: str, failed: FailedLookups, address: str | None) -> str | None:
    """The token's digest when PostgreSQL must be asked; None for a malformed token or one in the negative cache.
    Raises :class:`LookupsRateLimited` when ``address`` is out of failed lookups. No I/O."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    digest = hash_token(token)
    if failed.known_bad(digest):
        return None
    failed.check(address)
    return digest


def _query(conn: Any, digest: str, failed: FailedLookups, address: str | None) -> Principal | None:
    """The active key of ``digest``; a miss is recorded against the digest and ``address``."""
    row = conn.execute(
        "SELECT user_id, role, key_id FROM api_keys WHERE token_sha256 = %s AND revoked_at IS NULL",
        (digest,),
    ).fetchone()
    if row is None:
        failed.record(digest, address)
        return None
    return Principal(user_id=row[0], role=row[1], key_id=row[2])


def active_principals(conn: Any, token_hashes: list[str]) -> dict[str, Principal]:
    """The principals of the active keys among ``token_hashes`` (:func:`hash_token` digests), keyed by digest, in
    one query; unknown and revoked keys are absent."""
    rows = conn.execute(
        "SELECT token_sha256, user_id, role, key_id FROM api_keys WHERE token_sha256 = ANY(%s) AND revoked_at IS NULL",
        (token_hashes,),
    ).fetchall()
    return {row[0]: Principal(user_id=row[1], role=row[2], key_id=row[3]) for row in rows}


def _lookup(token: str, pool: Any, address: str | None) -> Principal | None:
    """:func:`lookup_principal` through ``pool``: a pooled connection is taken only when :func:`_screen` leaves a
    query to make."""
    failed = failed_lookups()
    address = address if address is not None else client_address.get()
    digest = _screen(token, failed, address)
    if digest is None:
        return None
    with pool.connection() as conn:
        return _query(conn, digest, failed, address)


log = logging.getLogger(__name__)


class PrincipalCache:
    """Resolved tokens kept for ``ttl_s`` seconds (keyed by the token's SHA-256, never the token), so a burst of
    requests with one key costs one PostgreSQL lookup. At most ``max_entries``; the oldest half is dropped when
    full. ``ttl_s = 0`` disables it.

    An entry counts as valid for ``ttl_s`` seconds after the *start* of the PostgreSQL read that confirmed it, so a
    revoked key stops working at most ``ttl_s`` late. :meth:`refresh` re-confirms every entry used since the last
    refresh with one query (``token_sha256 = ANY(...)``) and drops revoked or deleted keys; run every
    ``ttl_s / 2`` seconds by :meth:`start_refresh`, it keeps the keys in use from expiring, so their requests never
    wait for a lookup (without it each active key missed once per ``ttl_s``: at 1,000 requests/s over 1,000 keys,
    about one request in six took PostgreSQL's and FastAPI's slow path). ``timer``: monotonic seconds.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000, *, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._timer = timer
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._used: set[str] = set()  # keys of entries read since the last refresh
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _cached(self, key: str, now: float) -> Principal | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                self._used.add(key)
                return hit[1]
        return None

    def peek(self, token: str) -> Principal | None:
        """The cached principal of ``token`` if confirmed less than ``ttl_s`` ago, else None (no I/O)."""
        if self.ttl_s <= 0:
            return None
        return self._cached(hash_token(token), self._timer())

    def resolve(self, token: str, pool: Any, address: str | None = None) -> Principal | None:
        """The principal of ``token`` (cached), or None for an unknown, malformed or revoked token.

        ``pool``: a psycopg ``ConnectionPool``; ``address``: the client's address (default :data:`client_address`).
        A miss goes through :func:`lookup_principal`'s negative cache and per-address limit before a pooled
        connection is taken. Raises :class:`LookupsRateLimited` (429); PostgreSQL errors propagate."""
        if self.ttl_s <= 0:
            return _lookup(token, pool, address)
        key, now = hash_token(token), self._timer()
        hit = self._cached(key, now)
        if hit is not None:
            return hit
        principal = _lookup(token, pool, address)
        if principal is not None:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    for stale in list(self._entries)[: self.max_entries // 2]:
                        del self._entries[stale]
                        self._used.discard(stale)
                self._entries[key] = (now, principal)
                self._used.add(key)
        return principal

    def refresh(self, pool: Any) -> tuple[int, int]:
        """Re-confirm the entries used (or resolved) since the last refresh with one PostgreSQL query; revoked or
        deleted keys are dropped, entries not used since are left to expire. Returns ``(confirmed, dropped)``.
        PostgreSQL errors propagate (nothing changes then: the entries expire as without refresh)."""
        with self._lock:
            keys = [key for key in self._used if key in self._entries]
            self._used.clear()
        if not keys:
            return 0, 0
        started = self._timer()
        with pool.connection() as conn:
            active = active_principals(conn, keys)
        dropped = 0
        with self._lock:
            for key in keys:
                current = self._entries.get(key)
                if current is None or current[0] >= started:
                    continue  # evicted meanwhile, or resolved after this query started
                if key in active:
                    self._entries[key] = (started, active[key])
                else:
                    del self._entries[key]
                    dropped += 1
        return len(keys) - dropped, dropped

    def start_refresh(self, pool: Any) -> None:
        """Run :meth:`refresh` every ``ttl_s / 2`` seconds in a daemon thread until :meth:`stop_refresh` (nothing
        with ``ttl_s = 0``). A failing refresh is logged; its entries then expire as without refresh."""
        if self.ttl_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh_loop, args=(pool,), name="principal-refresh", daemon=True)
        self._thread.start()

    def stop_refresh(self) -> None:
        """Stop the refresh thread (waits for a running refresh)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _refresh_loop(self, pool: Any) -> None:
        while not self._stop.wait(self.ttl_s / 2):
            try:
                self.refresh(pool)
            except Exception as exc:  # noqa: BLE001 - the entries expire on their own; requests look keys up
                log.warning("principal cache refresh failed: %s", exc)
