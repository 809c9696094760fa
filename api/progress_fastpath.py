"""A fast path for cache hits of ``GET /v1/users/{user_id}/progress``, ahead of FastAPI's whole stack.

Measured on the 2-core machine of ``bench/api.py``: with the progress cache warm, FastAPI's routing, dependency
solving and middleware stack cost more CPU per request than rendering the cached body. So a request that needs
no I/O at all is answered before FastAPI (:class:`FastPathAPI` offers every request to :class:`ProgressFastPath`
first, outside even FastAPI's telemetry, body-limit and error middleware): the token is in the principal cache
(:meth:`runtime.principals.PrincipalCache.peek`), the read rule decides without PostgreSQL
(:func:`api.access.read_decision` is ``True``: a learner reading itself, an admin), the query holds
only ``window``/``from``/``to`` values that parse cleanly (``from``/``to`` with pydantic, as FastAPI does; the parse
of a raw query string is remembered), and the learner is in the progress cache. **Anything else falls through to
the FastAPI route unchanged** (which then answers 401/403/404/422, reads PostgreSQL or ClickHouse, and fills the
cache), and so does a request whose check raises, so the fast path can only answer what the route would answer,
with the same bytes and headers (``content-type: application/json``, ``content-length``, ``vary:
Accept-Encoding`` and, when the request accepts gzip, ``content-encoding: gzip`` with the compressed body the
route sends: :meth:`ProgressCache.body` for both). Its latency is observed
in the same ``coach_api_request_seconds`` histogram, under the route's path.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException
from pydantic import TypeAdapter, ValidationError
from starlette.types import Receive, Scope, Send

from api.access import ID_PATTERN, read_decision
from api.encoding import accepts_gzip, progress_headers
from api.models import WINDOW_KINDS, WindowKind
from api.progress_cache import ProgressCache
from api.settings import ApiSettings
from api.telemetry import REQUEST_LATENCY
from runtime.principals import PrincipalCache, parse_bearer

__all__ = ["FastPathAPI", "ProgressFastPath"]

_PREFIX, _SUFFIX = "/v1/users/", "/progress"
_ROUTE = "/v1/users/{user_id}/progress"
_USER_ID = re.compile(ID_PATTERN)
_OPTIONAL_DATETIME = TypeAdapter(datetime | None)
_KINDS = frozenset(WINDOW_KINDS)
_Query = tuple[tuple[WindowKind, ...], datetime | None, datetime | None]
_UNSEEN: Any = object()
_QUERY_MEMO_SIZE, _QUERY_MEMO_KEY_MAX = 4096, 512
"""At most this many distinct raw query strings (of at most this many bytes) have their parse remembered (the memo
is cleared when full). The parse of a query string depends on nothing else: ``to`` = now is resolved per request,
after the memo."""

log = logging.getLogger(__name__)


class ProgressFastPath:
    """Serves warm progress reads of a FastAPI app before its middleware stack (see :class:`FastPathAPI`).

    ``fastapi_app`` holds the state (``principals``, ``progress_cache``, set in its lifespan); ``resolve_range``
    is :func:`api.time_range.resolve_range` (the same defaults and 422 rules: a request it rejects falls through)."""

    def __init__(self, *, fastapi_app: FastAPI, settings: ApiSettings, resolve_range: Any) -> None:
        self._fastapi_app = fastapi_app
        self._settings = settings
        self._resolve_range = resolve_range
        self._observe = REQUEST_LATENCY.labels(_ROUTE, "GET", "200").observe
        self._queries: dict[bytes, _Query | None] = {}

    async def serve(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it is a warm progress read (then True); False leaves it to the app untouched.
        An unexpected error while deciding counts as 'not warm' (the route then answers, or reports it)."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        path: str = scope["path"]
        if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return False
        started = time.perf_counter()
        try:
            answer = self._hit(scope, path[len(_PREFIX) : -len(_SUFFIX)])
        except Exception:  # noqa: BLE001 - the FastAPI route is the authority; let it answer
            log.exception("progress fast path failed; the route answers")
            return False
        if answer is None:
            return False
        body, gzipped = answer
        await send({"type": "http.response.start", "status": 200, "headers": progress_headers(body, gzipped)})
        await send({"type": "http.response.body", "body": body})
        self._observe(time.perf_counter() - started)
        return True

    def _hit(self, scope: Scope, user_id: str) -> tuple[bytes, bool] | None:
        """The body and whether it is gzipped when the request can be answered from memory exactly as the route
        would; else None."""
        if "/" in user_id or not _USER_ID.match(user_id):
            return None
        state = self._fastapi_app.state
        principals: PrincipalCache | None = getattr(state, "principals", None)
        cache: ProgressCache | None = getattr(state, "progress_cache", None)
        if principals is None or cache is None:
            return None
        authorization: list[bytes] = []
        accept_encoding: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization.append(value)
            elif name == b"accept-encoding":
                accept_encoding.append(value)
        if len(authorization) != 1:
            return None
        token = parse_bearer(authorization[0].decode("latin-1"))
        caller = principals.peek(token) if token is not None else None
        if caller is None or read_decision(caller, user_id) is not True:
            return None
        raw: bytes = scope["query_string"]
        params = self._queries.get(raw, _UNSEEN)
        if params is _UNSEEN:
            params = _parse_query(raw)
            if len(raw) <= _QUERY_MEMO_KEY_MAX:
                if len(self._queries) >= _QUERY_MEMO_SIZE:
                    self._queries.clear()
                self._queries[raw] = params
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
        gzip = bool(accept_encoding) and accepts_gzip(b",".join(accept_encoding).decode("latin-1"))
        return cache.body(entry, kinds, range_from, range_to, gzip=gzip, remember=end is not None)


def _parse_query(raw: bytes) -> _Query | None:
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


class FastPathAPI(FastAPI):
    """A :class:`FastAPI` whose ASGI entry point first offers each request to ``fast_path`` (a
    :class:`ProgressFastPath`, set after construction; None = plain FastAPI), so warm progress reads skip the
    whole middleware stack (FastAPI's telemetry and body-limit wrappers, Starlette's error and exception
    middleware, the latency middleware, routing and dependency solving: most of a warm request's CPU here)."""

    fast_path: ProgressFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: the fast path's answer, else FastAPI's."""
        if self.fast_path is not None and await self.fast_path.serve(scope, send):
            return
        await super().__call__(scope, receive, send)
