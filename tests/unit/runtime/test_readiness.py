"""``runtime.readiness``: the /readyz answer of both HTTP APIs."""

from __future__ import annotations

import json

import pytest

from runtime.readiness import readiness_response

pytestmark = pytest.mark.unit


def _fail() -> None:
    raise ConnectionError("connection refused")


def test_ready_only_when_every_probe_passes() -> None:
    ok = readiness_response({"postgres": lambda: None, "clickhouse": lambda: True})
    assert ok.status_code == 200
    assert json.loads(ok.body) == {"status": "ready", "checks": {"postgres": "ok", "clickhouse": "ok"}}

    bad = readiness_response({"postgres": _fail, "clickhouse": lambda: False, "broker": lambda: {"topics": 3}})
    assert bad.status_code == 503
    body = json.loads(bad.body)
    assert body["status"] == "not ready"
    assert body["checks"] == {
        "postgres": "unreachable: connection refused",
        "clickhouse": "unreachable: probe answered False",
        "broker": "ok",
    }
