"""FastAPI authentication shared by the ingestion and progress APIs: ``Authorization: Bearer <token>``.

``CurrentPrincipal`` is a typed ``Annotated`` dependency (the FastAPI full-stack template's pattern):
the user comes from the token, never from the request body. Unknown, malformed or revoked tokens
give 401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3); a client address that caused too many failed
lookups gets 429 with ``Retry-After`` (:func:`runtime.principals.lookup_principal`), and a token that just
failed is answered from the negative cache without a PostgreSQL query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from runtime.principals import Principal, PrincipalCache, client_address, parse_bearer

__all__ = ["CurrentPrincipal", "authenticate", "bearer_token", "get_pg_pool", "require_principal"]

_bearer = HTTPBearer(auto_error=False, description="A key from `coach keys create`")


def get_pg_pool(request: Request) -> ConnectionPool:
    """The app's PostgreSQL pool (``app.state.pg_pool``, opened in the lifespan)."""
    pool: ConnectionPool = request.app.state.pg_pool
    return pool


def authenticate(request: Request, token: str | None) -> Principal:
    """The principal of ``token`` for this request, through the app's :class:`~runtime.principals.PrincipalCache`
    (``app.state.principals``; an app without one looks every token up) and ``app.state.pg_pool``. The one
    authentication of both APIs and their routes.

    Raises ``HTTPException`` 401 (``WWW-Authenticate: Bearer``, RFC 6750 §3) when ``token`` is None, unknown,
    malformed or revoked, and :class:`~runtime.principals.LookupsRateLimited` (429) when the client's address is
    out of failed lookups. PostgreSQL errors propagate."""
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    cache: PrincipalCache = getattr(request.app.state, "principals", None) or _UNCACHED
    address = request.client.host if request.client else client_address.get()
    principal = cache.resolve(token, request.app.state.pg_pool, address)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


_UNCACHED = PrincipalCache(0.0)


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The token of FastAPI's parsed ``Authorization`` header (:func:`runtime.principals.parse_bearer` rules)."""
    if credentials is None:
        return None
    return parse_bearer(f"{credentials.scheme} {credentials.credentials}")


def require_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller from ``Authorization: Bearer`` (:func:`authenticate`). Raises 401 or 429."""
    return authenticate(request, bearer_token(credentials))


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
"""The authenticated caller; use as a parameter type in a route."""
