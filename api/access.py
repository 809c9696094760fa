"""Who may read what, as typed ``Annotated`` FastAPI dependencies.

Authentication: ``Authorization: Bearer <token>`` (a key from ``coach keys create``); the learner progress page
also accepts ``?token=<token>`` (a browser cannot set the header on a plain link; the header wins when both are
given). A missing, unknown or revoked token is 401 with ``WWW-Authenticate: Bearer``.

Authorization — one rule for the whole API:

* **403** when the caller's *role* may never use the endpoint (a learner on the cohort views);
* **404** when the *resource* is outside what the caller may read — another learner's progress, submissions or
  progress page, a submission of another learner, a cohort the coach does not coach — exactly as if it did not
  exist, so ids cannot be probed.

What each role reads: a **learner** its own user only; a **coach** (its key's user id is the coach id) itself, the
learners whose ``learners.coach_id`` is the coach, and every learner of a cohort it coaches (a cohort with at least
one learner whose ``coach_id`` is the coach); an **admin** everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from api.analytics import ClickHouseReader
from api.readmodels import coach_cohorts, learner_visible_to_coach
from runtime.http_auth import get_pg_pool
from runtime.principals import Principal, active_principals, hash_token, lookup_principal

__all__ = [
    "Caller",
    "ClickHouse",
    "ID_PATTERN",
    "PageCaller",
    "Postgres",
    "PrincipalCache",
    "ReadableCohort",
    "ReadableUser",
    "ReadableUserAsync",
    "can_read_user",
    "get_reader",
]

ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
"""User ids and cohort names in paths: 1–128 characters, no control characters."""

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="A key from `coach keys create`")


def get_reader(request: Request) -> ClickHouseReader:
    """The app's :class:`~api.analytics.ClickHouseReader` (``app.state.clickhouse``, opened in the lifespan)."""
    reader: ClickHouseReader = request.app.state.clickhouse
    return reader


ClickHouse = Annotated[ClickHouseReader, Depends(get_reader)]
"""The read-only ClickHouse reader."""
Postgres = Annotated[ConnectionPool, Depends(get_pg_pool)]
"""The read-only PostgreSQL pool (every session has ``default_transaction_read_only = on``)."""


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

    def resolve(self, token: str, pool: ConnectionPool) -> Principal | None:
        """The principal of ``token`` (cached), or None for an unknown, malformed or revoked token."""
        if self.ttl_s <= 0:
            return _lookup(token, pool)
        key, now = hash_token(token), self._timer()
        hit = self._cached(key, now)
        if hit is not None:
            return hit
        principal = _lookup(token, pool)
        if principal is not None:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    for stale in list(self._entries)[: self.max_entries // 2]:
                        del self._entries[stale]
                        self._used.discard(stale)
                self._entries[key] = (now, principal)
                self._used.add(key)
        return principal

    def refresh(self, pool: ConnectionPool) -> tuple[int, int]:
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

    def start_refresh(self, pool: ConnectionPool) -> None:
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

    def _refresh_loop(self, pool: ConnectionPool) -> None:
        while not self._stop.wait(self.ttl_s / 2):
            try:
                self.refresh(pool)
            except Exception as exc:  # noqa: BLE001 - the entries expire on their own; requests look keys up
                log.warning("principal cache refresh failed: %s", exc)


def _lookup(token: str, pool: ConnectionPool) -> Principal | None:
    with pool.connection() as conn:
        return lookup_principal(conn, token)


def _unauthorized(reason: str, error: str | None = None) -> HTTPException:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return HTTPException(status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": challenge})


def _authenticate(request: Request, token: str | None, pool: ConnectionPool) -> Principal:
    if not token:
        raise _unauthorized("missing bearer token")
    principal = request.app.state.principals.resolve(token, pool)
    if principal is None:
        raise _unauthorized("invalid or revoked token", "invalid_token")
    return principal


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    pool: Postgres,
) -> Principal:
    """The caller from ``Authorization: Bearer``. Raises 401."""
    token = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    return _authenticate(request, token, pool)


Caller = Annotated[Principal, Depends(current_caller)]
"""The authenticated caller (bearer header)."""


def page_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    pool: Postgres,
    token: Annotated[
        str | None,
        Query(max_length=256, description="Bearer token, for browsers that cannot send the Authorization header"),
    ] = None,
) -> Principal:
    """The caller from ``Authorization: Bearer`` or ``?token=``. Raises 401."""
    header = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    return _authenticate(request, header or token, pool)


PageCaller = Annotated[Principal, Depends(page_caller)]
"""The authenticated caller of an HTML page (bearer header or ``?token=``)."""


def can_read_user(pool: ConnectionPool, caller: Principal, user_id: str) -> bool:
    """The module's rule: itself, an admin, or a coach of the learner or of the learner's cohort."""
    if caller.role == "admin" or caller.user_id == user_id:
        return True
    if caller.role != "coach":
        return False
    with pool.connection() as conn:
        return learner_visible_to_coach(conn, caller.user_id, user_id)


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def _readable_user(caller: Principal, pool: ConnectionPool, user_id: str) -> str:
    if not can_read_user(pool, caller, user_id):
        raise _not_found(f"user {user_id!r}")
    return user_id


UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The learner's user id")]


def readable_user(user_id: UserIdPath, caller: Caller, pool: Postgres) -> str:
    """The ``{user_id}`` path parameter, once the caller may read that user. Raises 401/404."""
    return _readable_user(caller, pool, user_id)


def page_readable_user(user_id: UserIdPath, caller: PageCaller, pool: Postgres) -> str:
    """As :func:`readable_user` for the HTML page (token from the header or the query)."""
    return _readable_user(caller, pool, user_id)


async def current_caller_async(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """As :func:`current_caller`, without a thread hop when the token is in the principal cache (a PostgreSQL
    lookup runs in the thread pool). Raises 401."""
    token = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    if not token:
        raise _unauthorized("missing bearer token")
    principals: PrincipalCache = request.app.state.principals
    caller = principals.peek(token)
    if caller is None:
        caller = await run_in_threadpool(principals.resolve, token, request.app.state.pg_pool)
    if caller is None:
        raise _unauthorized("invalid or revoked token", "invalid_token")
    return caller


async def readable_user_async(
    request: Request, user_id: UserIdPath, caller: Annotated[Principal, Depends(current_caller_async)]
) -> str:
    """As :func:`readable_user` (same rule, same 401/404), for async routes: no thread hop unless PostgreSQL is
    needed (a token not in the principal cache, a coach's learners). The progress endpoint's hot path."""
    if caller.role == "admin" or caller.user_id == user_id:
        return user_id
    if caller.role == "coach" and await run_in_threadpool(can_read_user, request.app.state.pg_pool, caller, user_id):
        return user_id
    raise _not_found(f"user {user_id!r}")


ReadableUser = Annotated[str, Depends(readable_user)]
"""A user id the caller may read."""
ReadableUserAsync = Annotated[str, Depends(readable_user_async)]
"""A user id the caller may read (async dependency; same rule and errors as :data:`ReadableUser`)."""
PageReadableUser = Annotated[str, Depends(page_readable_user)]
"""A user id the caller of an HTML page may read."""


def readable_cohort(
    cohort: Annotated[str, Path(pattern=ID_PATTERN, description="Cohort name (learners.cohort)")],
    caller: Caller,
    pool: Postgres,
) -> str:
    """The ``{cohort}`` path parameter, once the caller may read it: 403 for learners, 404 for a coach's
    cohort it does not coach."""
    if caller.role == "learner":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cohort views are for coaches and admins")
    if caller.role == "coach":
        with pool.connection() as conn:
            if cohort not in coach_cohorts(conn, caller.user_id):
                raise _not_found(f"cohort {cohort!r}")
    return cohort


ReadableCohort = Annotated[str, Depends(readable_cohort)]
"""A cohort the caller may read."""
