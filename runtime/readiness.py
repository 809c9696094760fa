"""The ``/readyz`` answer shared by the HTTP APIs (ingestion, progress): run each dependency's probe, report each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from runtime.service_states import READY, states

__all__ = ["postgres_probe", "readiness_response"]


def postgres_probe(pool: ConnectionPool[Any], timeout_s: float = 2.0) -> Callable[[], None]:
    """A probe that takes a connection from ``pool`` (waiting at most ``timeout_s``) and runs ``SELECT 1``."""

    def probe() -> None:
        with pool.connection(timeout=timeout_s) as conn:
            conn.execute("SELECT 1")

    return probe


def readiness_response(probes: Mapping[str, Callable[[], object]]) -> JSONResponse:
    """Call every probe (e.g. ``{"postgres": postgres_probe(pool)}``); a probe is healthy when it returns anything
    but ``False`` (clickhouse-connect's ``Client.ping`` answers ``False`` instead of raising). 200 with
    ``{"status": "ready", "checks": {name: "ok"}}`` when all are, else 503 with ``"not ready"`` and
    ``"unreachable: <error>"`` for each failing one. Never raises: a failing probe is the answer, not an error.

    In a process that runs several services (``coach run``), ``services`` lists each one's state
    (:mod:`runtime.service_states`), and the answer is ready only when every one of them is."""
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            checks[name] = "unreachable: probe answered False" if probe() is False else "ok"
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency makes the service not ready
            checks[name] = f"unreachable: {exc}"
    services = states.snapshot()
    ok = all(v == "ok" for v in checks.values()) and all(v == READY for v in services.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
    if services:
        body["services"] = services
    return JSONResponse(body, status_code=200 if ok else 503)
