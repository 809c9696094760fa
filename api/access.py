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

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from api.analytics import ClickHouseReader
from api.readmodels import coach_cohorts, learner_visible_to_coach
from runtime.http_auth import CurrentPrincipal, authenticate, bearer_token, get_pg_pool
from runtime.principals import Principal

__all__ = [
    "Caller",
    "ClickHouse",
    "ID_PATTERN",
    "PageCaller",
    "Postgres",
    "ReadableCohort",
    "ReadableUser",
    "read_decision",
    "can_read_user",
    "get_reader",
]

ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
"""User ids and cohort names in paths: 1–128 characters, no control characters."""

_bearer = HTTPBearer(auto_error=False, description="A key from `coach keys create`")


def get_reader(request: Request) -> ClickHouseReader:
    """The app's :class:`~api.analytics.ClickHouseReader` (``app.state.clickhouse``, opened in the lifespan)."""
    reader: ClickHouseReader = request.app.state.clickhouse
    return reader


ClickHouse = Annotated[ClickHouseReader, Depends(get_reader)]
"""The read-only ClickHouse reader."""
Postgres = Annotated[ConnectionPool, Depends(get_pg_pool)]
"""The read-only PostgreSQL pool (every session has ``default_transaction_read_only = on``)."""


Caller = CurrentPrincipal
"""The authenticated caller (bearer header): :data:`runtime.http_auth.CurrentPrincipal`, the one dependency of both
APIs."""


def page_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[
        str | None,
        Query(max_length=256, description="Bearer token, for browsers that cannot send the Authorization header"),
    ] = None,
) -> Principal:
    """The caller from ``Authorization: Bearer`` or ``?token=`` (the header wins). Raises 401/429."""
    return authenticate(request, bearer_token(credentials) or token)


PageCaller = Annotated[Principal, Depends(page_caller)]
"""The authenticated caller of an HTML page (bearer header or ``?token=``)."""


def read_decision(caller: Principal, user_id: str) -> bool | None:
    """Who may read a learner, as far as the caller alone decides it: ``True`` for an admin or the learner itself,
    ``False`` for another learner, ``None`` for a coach (whether ``user_id`` is one of its learners, or in a cohort
    it coaches, is a PostgreSQL question: :func:`can_read_user`). The fast path answers only ``True``."""
    if caller.role == "admin" or caller.user_id == user_id:
        return True
    if caller.role != "coach":
        return False
    return None


def can_read_user(pool: ConnectionPool, caller: Principal, user_id: str) -> bool:
    """The module's rule (:func:`read_decision`, then a coach's learners from PostgreSQL)."""
    decided = read_decision(caller, user_id)
    if decided is not None:
        return decided
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


ReadableUser = Annotated[str, Depends(readable_user)]
"""A user id the caller may read."""
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
