"""A local HTTP server speaking the OpenAI chat-completions protocol, with scripted faults per request.

The only fake of the test suite: the real LLM services are paid and unreachable from CI. It is a real HTTP server
(stdlib ``ThreadingHTTPServer`` on 127.0.0.1, an ephemeral port, a background thread), so the ``openai`` client,
its timeouts and status handling run for real.

Each ``POST …/chat/completions`` is answered by ``responder(body)`` when given and it returns a step, else by the
next step of the script, else by ``default``:

* :class:`Reply` — a chat completion whose message content is ``content`` (valid feedback JSON by default);
* :class:`Fault` — an HTTP error status with an OpenAI-style error body and optional headers (``Retry-After``);
* :class:`Hang` — no answer for ``seconds`` (the client's timeout fires first);
* :class:`Raw` — arbitrary bytes with a status (a body that is not a chat completion).

Usage::

    with FakeOpenAI([Fault(429, headers={"Retry-After": "1"}), Reply()]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        assert len(server.requests) == 2
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAI", "Fault", "Hang", "Raw", "RecordedRequest", "Reply", "Step", "feedback_json"]


def feedback_json(
    summary: str = "Nice work: your pace was easy to follow.",
    points: list[dict[str, str]] | None = None,
) -> str:
    """A valid answer to the feedback prompt (``{"summary", "points"}``) as a JSON string."""
    return json.dumps(
        {
            "summary": summary,
            "points": points
            or [
                {"kind": "went_well", "metric": "speech_rate_wpm", "message": "Your pace was comfortable."},
                {"kind": "work_on", "metric": "filled_pause_count", "message": "Pause silently instead of 'um'."},
            ],
        }
    )


@dataclass(frozen=True)
class Reply:
    """A successful chat completion."""

    content: str = field(default_factory=feedback_json)
    prompt_tokens: int = 321
    completion_tokens: int = 87
    finish_reason: str = "stop"
    model: str | None = None  # default: the model asked for
    delay_s: float = 0.0


@dataclass(frozen=True)
class Fault:
    """An HTTP error response (OpenAI error body)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted fault"
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """No response for ``seconds`` (then the server gives up on the request)."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Raw:
    """Arbitrary response bytes."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


Step = Reply | Fault | Hang | Raw


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: path, headers (lower-cased names), parsed JSON body, arrival time."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float


class FakeOpenAI:
    """The server; use as a context manager (or :meth:`start`/:meth:`stop`). Thread-safe."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        default: Step | None = None,
        responder: Callable[[dict[str, Any]], Step | None] | None = None,
    ) -> None:
        self._script: deque[Step] = deque(script)
        self.responder = responder
        self.default: Step = default or Reply()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )

    # ------------------------------------------------------------------------------------------- control
    @property
    def base_url(self) -> str:
        """The ``base_url`` to give the OpenAI client (``http://127.0.0.1:<port>/v1``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def enqueue(self, *steps: Step) -> None:
        """Append steps to the script."""
        with self._lock:
            self._script.extend(steps)

    def start(self) -> FakeOpenAI:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ serving
    def _next_step(self, body: dict[str, Any]) -> Step:
        chosen = self.responder(body) if self.responder else None
        if chosen is not None:
            return chosen
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, _error_body(f"no route {self.path}", "not_found"))
                    return
                with fake._lock:
                    fake.requests.append(
                        RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                fake._enter()
                try:
                    self._serve(fake._next_step(body), body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer
                finally:
                    fake._leave()

            def _serve(self, step: Step, body: dict[str, Any]) -> None:
                if isinstance(step, Hang):
                    fake._closing.wait(step.seconds)
                    self.close_connection = True
                    return
                if isinstance(step, Raw):
                    self._send(step.status, step.body, content_type=step.content_type)
                    return
                if step.delay_s:
                    fake._closing.wait(step.delay_s)
                if isinstance(step, Fault):
                    kind = "rate_limit_exceeded" if step.status == 429 else "server_error"
                    self._send(step.status, _error_body(step.message, kind), headers=step.headers)
                    return
                completion = {
                    "id": f"chatcmpl-fake-{len(fake.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": step.model or body.get("model", "fake-model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": step.content},
                            "finish_reason": step.finish_reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": step.prompt_tokens,
                        "completion_tokens": step.completion_tokens,
                        "total_tokens": step.prompt_tokens + step.completion_tokens,
                    },
                }
                self._send(200, json.dumps(completion).encode("utf-8"))

            def _send(
                self,
                status: int,
                payload: bytes,
                *,
                headers: dict[str, str] | None = None,
                content_type: str = "application/json",
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def _error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": kind}}).encode("utf-8")
