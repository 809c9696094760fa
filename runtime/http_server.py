"""The one place HTTP servers are built: a uvicorn server with connection, request,
header and body limits, for both APIs (``coach serve ingestion|api``, ``coach run``, tests).

What uvicorn offers and what is added here (uvicorn 0.55, httptools parser):

* ``limit_concurrency`` (:attr:`HttpLimits.max_connections`): past that many open connections (or running
  requests), new requests get uvicorn's own 503. It counts *connections*, so it is only the outer fence.
* ``timeout_keep_alive`` (:attr:`HttpLimits.keep_alive_timeout_s`): an idle connection is closed that long after
  its last response. uvicorn arms it only *after* a response, and the first byte of a next request disarms it.
* ``h11_max_incomplete_event_size`` (:attr:`HttpLimits.max_header_bytes`): applies to the h11 parser only.
* **No header-read deadline**: a client that connects and trickles header bytes holds its connection forever
  (slowloris). :func:`build_uvicorn_server` therefore runs uvicorn with a subclass of its httptools protocol that
  arms a timer when a connection opens and when a response completes, disarms it when the request's headers are
  complete, and answers ``408`` and closes the connection when it fires (:attr:`HttpLimits.header_timeout_s`);
  the same protocol answers ``431`` and closes when more than :attr:`HttpLimits.max_header_bytes` arrive before
  the headers are complete (httptools/llhttp has no header-size limit of its own).
* **Body deadline and in-flight requests** at the ASGI level (:class:`LimitsMiddleware`, outermost): a request
  body that stalls for :attr:`HttpLimits.body_timeout_s` between two chunks is answered ``408`` (the app sees a
  disconnect); more than :attr:`HttpLimits.max_requests_in_flight` requests at once are answered ``503`` with
  ``Retry-After`` before they reach the app, except the operational paths (``/healthz``, ``/readyz``,
  ``/metrics``), which always get through, so liveness answers while the app is saturated. It also sets
  :data:`runtime.principals.client_address` for the per-address limit of failed token lookups.

"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.principals import client_address

__all__ = [
    "OPERATIONAL_PATHS",
    "HttpLimits",
    "HttpServerSettings",
    "LimitsMiddleware",
    "build_uvicorn_server",
    "serve_uvicorn",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/"})
"""Paths never refused by the in-flight limit (liveness, readiness and scrapes must answer under load)."""


@dataclass(frozen=True)
class HttpLimits:
    """Limits of one HTTP server. Units: seconds and bytes; see the module for what enforces each.

    ``max_connections``: open connections (uvicorn ``limit_concurrency``; new requests past it get 503);
    ``max_requests_in_flight``: requests being answered at once (503 + ``Retry-After: 1`` past it, operational
    paths exempt); ``header_timeout_s``: from connection (or end of the previous response) to complete request
    headers (408 + close); ``body_timeout_s``: longest wait for the next chunk of a request body (408);
    ``keep_alive_timeout_s``: idle keep-alive connections are closed after it; ``max_header_bytes``: request line
    and headers at most (431 + close).
    """

    max_connections: int = 1024
    max_requests_in_flight: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 5.0
    max_header_bytes: int = 32 * 1024

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_requests_in_flight, self.max_header_bytes) < 1:
            raise ValueError(f"connection, request and header limits must be positive: {self}")
        if min(self.header_timeout_s, self.body_timeout_s, self.keep_alive_timeout_s) <= 0:
            raise ValueError(f"timeouts must be positive: {self}")


class HttpServerSettings(BaseSettings):
    """The :class:`HttpLimits` fields as settings, for a component's settings class to inherit (its ``env_prefix``
    names the variables: ``COACH_API_MAX_CONNECTIONS``, ``COACH_INGESTION_HEADER_TIMEOUT_S`` …); defaults are
    :class:`HttpLimits`' own. A subclass may override a default by redeclaring the field (with its docstring)."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True)

    max_connections: int = Field(default=HttpLimits.max_connections, ge=1)
    """open HTTP connections at most (uvicorn limit_concurrency; requests past it get 503)"""
    max_requests_in_flight: int = Field(default=HttpLimits.max_requests_in_flight, ge=1)
    """requests answered at once; more get 503 with Retry-After: 1 (/healthz, /readyz, /metrics exempt)"""
    header_timeout_s: float = Field(default=HttpLimits.header_timeout_s, gt=0)
    """a connection must deliver complete request headers this many seconds after it opens (or after the previous
    response), else 408 and close (slow clients)"""
    body_timeout_s: float = Field(default=HttpLimits.body_timeout_s, gt=0)
    """longest wait for the next chunk of a request body, seconds (408 past it; a spooled upload is deleted)"""
    keep_alive_timeout_s: float = Field(default=HttpLimits.keep_alive_timeout_s, gt=0)
    """idle keep-alive connections close after it, seconds"""
    max_header_bytes: int = Field(default=HttpLimits.max_header_bytes, ge=1024)
    """request line and headers at most, bytes (431 and close)"""

    def http_limits(self) -> HttpLimits:
        """The :class:`HttpLimits` of these settings (every field of it has a field of the same name here)."""
        return HttpLimits(**{limit.name: getattr(self, limit.name) for limit in fields(HttpLimits)})


class _BodyTimeout(Exception):
    pass


class LimitsMiddleware:
    """ASGI middleware (outermost) enforcing :attr:`HttpLimits.max_requests_in_flight` and
    :attr:`HttpLimits.body_timeout_s` on ``http`` scopes; other scopes (lifespan) pass through untouched.

    In-flight: a request past the limit gets ``503 {"error": "overloaded", …}`` with ``Retry-After: 1`` without
    reaching the app, unless its path is in :data:`OPERATIONAL_PATHS`. Body: each ``receive()`` of a request body
    waits at most ``body_timeout_s``; when it expires and no response has started, the client gets
    ``408 {"error": "body_timeout", …}`` with ``Connection: close``, the app receives ``http.disconnect`` and
    whatever it sends afterwards is dropped (its exception, if any, is swallowed). Once the body is complete,
    ``receive()`` (an app waiting for the disconnect) has no deadline."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limits.max_requests_in_flight and scope.get("path") not in OPERATIONAL_PATHS:
            await _send_error(send, 503, "overloaded", "too many requests in flight; retry", {b"retry-after": b"1"})
            return
        client = scope.get("client")
        client_address.set(client[0] if client else None)  # per-address limit of failed token lookups
        self.in_flight += 1
        state = {"started": False, "timed_out": False, "body_done": False}
        timeout = self.limits.body_timeout_s

        async def limited_receive() -> Message:
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:  # waiting for a disconnect after the body: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                state["timed_out"] = True
                if not state["started"]:
                    state["started"] = True
                    await _send_error(
                        send,
                        408,
                        "body_timeout",
                        f"no request body bytes for {timeout:g} s",
                        {b"connection": b"close"},
                    )
                return {"type": "http.disconnect"}
            if message.get("type") != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def tracked_send(message: Message) -> None:
            if state["timed_out"]:
                return  # the 408 went out already
            if message.get("type") == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not state["timed_out"]:
                raise
        finally:
            self.in_flight -= 1


async def _send_error(send: Send, status: int, code: str, reason: str, extra: dict[bytes, bytes]) -> None:
    import json

    body = json.dumps({"error": code, "reason": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra.items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _deadline_protocol(limits: HttpLimits) -> type:
    """A subclass of uvicorn's httptools protocol with the header-read deadline and header-size bound."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    timeout_s, max_bytes = limits.header_timeout_s, limits.max_header_bytes

    class HeaderDeadlineProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol, plus: complete headers within ``header_timeout_s`` of the connection (or
        of the previous response) and at most ``max_header_bytes`` before them."""

        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def _arm(self) -> None:
            self._disarm()
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(timeout_s, self._header_deadline)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _refuse(self, status: bytes, reason: bytes) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(
                    b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: " + str(len(reason)).encode() + b"\r\nconnection: close\r\n\r\n" + reason
                )
            self.transport.close()

        def _header_deadline(self) -> None:
            self._header_timer = None
            self._refuse(b"408 Request Timeout", b"request headers not received in time")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            waiting = self._header_timer is not None
            super().data_received(data)
            if waiting and self._header_timer is not None:  # still no complete headers
                self._header_bytes += len(data)
                if self._header_bytes > max_bytes:
                    self._refuse(b"431 Request Header Fields Too Large", b"request headers too large")

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
                self._arm()  # idle, waiting for the next request's headers

    return HeaderDeadlineProtocol


def build_uvicorn_server(app: Any, host: str, port: int, limits: HttpLimits | None = None, **config: Any) -> Any:
    """A ``uvicorn.Server`` serving ``app`` (ASGI) on ``host:port`` with ``limits`` (default :class:`HttpLimits`;
    an app built by a component factory that set ``app.state.http_limits`` uses those). ``config``: further
    ``uvicorn.Config`` keywords (default ``log_level="warning"``). The caller runs it (``server.run()``) and stops it
    (``server.should_exit = True``)."""
    import uvicorn

    if limits is None:
        state = getattr(app, "state", None)
        limits = getattr(state, "http_limits", None) or HttpLimits()
    config.setdefault("log_level", "warning")
    return uvicorn.Server(
        uvicorn.Config(
            LimitsMiddleware(app, limits),
            host=host,
            port=port,
            http=_deadline_protocol(limits),
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=max(1, round(limits.keep_alive_timeout_s)),
            h11_max_incomplete_event_size=limits.max_header_bytes,
            **config,
        )
    )


def serve_uvicorn(
    app: Any,
    host: str,
    port: int,
    limits: HttpLimits | None = None,
    *,
    stop: threading.Event | None = None,
    signals: bool = True,
) -> Any:
    """Build (:func:`build_uvicorn_server`) and run a server until ``stop`` is set (or, with no ``stop``, until
    SIGINT/SIGTERM). ``signals=False`` keeps uvicorn from installing signal handlers (a thread of ``coach run``,
    where the main thread owns them; uvicorn installs them only in the main thread anyway). Returns the server once
    it stopped (``server.started`` tells whether it ever listened)."""
    server = build_uvicorn_server(app, host, port, limits)
    if not signals:
        server.install_signal_handlers = lambda: None
    if stop is not None:

        def watch() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=watch, name=f"http-stop-watcher-{port}", daemon=True).start()
    server.run()
    return server
