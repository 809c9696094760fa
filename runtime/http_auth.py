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

from runtime.principals import (
    TOKEN_PREFIX,
    Principal,
    client_address,
    failed_lookups,
    hash_token,
    lookup_principal,
)

__all__ = ["CurrentPrincipal", "get_pg_pool", "require_principal"]

_bearer = HTTPBearer(auto_error=False, description="A key from `coach keys create`")


def get_pg_pool(request: Request) -> ConnectionPool:
    """The app's PostgreSQL pool (``app.state.pg_pool``, opened in the lifespan)."""
    pool: ConnectionPool = request.app.state.pg_pool
    return pool


def require_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    pool: Annotated[ConnectionPool, Depends(get_pg_pool)],
) -> Principal:
    """Resolve the bearer token to a :class:`Principal`. Raises 401 when absent or invalid, 429
    (:class:`~runtime.principals.LookupsRateLimited`) when the client's address is out of failed lookups."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    token = credentials.credentials
    address = request.client.host if request.client else client_address.get()
    failed = failed_lookups()
    principal: Principal | None = None
    if token.startswith(TOKEN_PREFIX) and not failed.known_bad(hash_token(token)):
        failed.check(address)  # before a pooled connection is taken
        with pool.connection() as conn:
            principal = lookup_principal(conn, token, address=address, failed=failed)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
"""The authenticated caller; use as a parameter type in a route."""
