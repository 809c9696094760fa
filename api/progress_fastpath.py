"""An ASGI fast path for cache hits of ``GET /v1/users/{user_id}/progress``.

Measured on the 2-core machine of ``bench/api.py``: with the progress cache warm, FastAPI's routing, dependency
solving and middleware stack cost more CPU per request than rendering the cached body. So a request that needs
no I/O at all is answered before FastAPI: the token is in the principal cache (:meth:`PrincipalCache.peek`), the
rule needs no PostgreSQL (a learner reading itself, an admin), the query holds only ``window``/``from``/``to``
values that parse cleanly (``from``/``to`` with pydantic, as FastAPI does), and the learner is in the progress
cache. **Anything else falls through to the FastAPI route unchanged** (which then answers 401/403/404/422, reads
PostgreSQL or ClickHouse, and fills the cache), so the fast path can only answer what the route would answer, with
the same bytes and headers (``content-type: application/json``, ``content-length``). Its latency is observed in
the same ``coach_api_request_seconds`` histogram, under the route's path.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access import ID_PATTERN, PrincipalCache
from api.metrics import REQUEST_LATENCY
from api.models import WINDOW_KINDS, WindowKind
from api.progress_cache import ProgressCache
from api.settings import ApiSettings

__all__ = ["ProgressFastPath"]

_PREFIX, _SUFFIX = "/v1/users/", "/progress"
_ROUTE = "/v1/users/{user_id}/progress"
_USER_ID = re.compile(ID_PATTERN)
_OPTIONAL_DATETIME = TypeAdapter(datetime | None)
_KINDS = frozenset(WINDOW_KINDS)


class ProgressFastPath:
    """ASGI middleware around the progress API (``app``): serves warm progress reads, passes everything else on.

    ``fastapi_app`` holds the state (``principals``, ``progress_cache``, set in its lifespan); ``resolve_range``
    is :func:`api.app.resolve_range` (the same defaults and 422 rules: a request it rejects falls through)."""

    def __init__(self, app: ASGIApp, *, fastapi_app: FastAPI, settings: ApiSettings, resolve_range: Any) -> None:
        self.app = app
        self._fastapi_app = fastapi_app
        self._settings = settings
        self._resolve_range = resolve_range
        self._observe = REQUEST_LATENCY.labels(_ROUTE, "GET", "200").observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                started = time.perf_counter()
                body = self._hit(scope, path[len(_PREFIX) : -len(_SUFFIX)])
                if body is not None:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    self._observe(time.perf_counter() - started)
                    return
        await self.app(scope, receive, send)

    def _hit(self, scope: Scope, user_id: str) -> bytes | None:
        """The body when the request can be answered from memory exactly as the route would; else None."""
        if "/" in user_id or not _USER_ID.match(user_id):
            return None
        state = self._fastapi_app.state
        principals: PrincipalCache | None = getattr(state, "principals", None)
        cache: ProgressCache | None = getattr(state, "progress_cache", None)
        if principals is None or cache is None:
            return None
        authorization = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(authorization) != 1:
            return None
        scheme, _, token = authorization[0].decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            return None
        caller = principals.peek(token)
        if caller is None or (caller.role != "admin" and caller.user_id != user_id):
            return None
        params = _parse_query(scope["query_string"])
        if params is None:
            return None
        kinds, start, end = params
        try:
            range_from, range_to = self._resolve_range(start, end, self._settings)
        except HTTPException:
            return None
        entry = cache.peek(user_id)
        if entry is None:
            return None
        return entry.render(kinds, range_from, range_to)


def _parse_query(raw: bytes) -> tuple[tuple[WindowKind, ...], datetime | None, datetime | None] | None:
    """``window`` (repeatable, each a window kind), ``from`` and ``to`` (at most once, ISO 8601); None when the
    query holds anything else or a value FastAPI might read differently."""
    kinds: list[WindowKind] = []
    times: dict[str, datetime | None] = {}
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, strict_parsing=bool(raw))
    except ValueError:
        return None
    for name, value in pairs:
        if name == "window" and value in _KINDS:
            kinds.append(value)  # type: ignore[arg-type]
        elif name in ("from", "to") and name not in times and value:
            try:
                times[name] = _OPTIONAL_DATETIME.validate_python(value)
            except ValidationError:
                return None
        else:
            return None
    return (tuple(dict.fromkeys(kinds)) or WINDOW_KINDS), times.get("from"), times.get("to")
