"""Structured logs: one JSON object per line with service, level, ids from ``extra``; secrets redacted."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from runtime.logs import LogSettings, configure_logging
from runtime.service_states import states

pytestmark = pytest.mark.unit


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    states.clear()


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_json_lines_carry_service_ids_and_no_password(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("transcription-worker", LogSettings(format="json"))
    log = logging.getLogger("coach.test")
    log.warning(
        "cannot reach postgresql://coach:hunter2@db:5432/coach (password=hunter2)",
        extra={"submission_id": "01a2", "offset": 7, "consumer_group": "transcription"},
    )
    try:
        raise RuntimeError("api_key=sk-secret")
    except RuntimeError:
        log.exception("provider failed")
    first, second = _lines(capsys.readouterr().err)[-2:]
    assert first["service"] == "transcription-worker" and first["level"] == "warning"
    assert first["logger"] == "coach.test" and str(first["timestamp"]).endswith("Z")
    assert (first["submission_id"], first["offset"], first["consumer_group"]) == ("01a2", 7, "transcription")
    assert "hunter2" not in json.dumps(first) and "postgresql://coach:***@db:5432/coach" in str(first["event"])
    assert "RuntimeError" in str(second["exception"]) and "sk-secret" not in json.dumps(second)


def test_a_service_thread_of_coach_run_names_its_service(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("coach-run", LogSettings(format="json"))
    states.register("projector")
    thread = threading.Thread(target=lambda: logging.getLogger("p").info("batch"), name="projector")
    thread.start()
    thread.join()
    logging.getLogger("p").info("main")
    by_event = {line["event"]: line for line in _lines(capsys.readouterr().err)}
    assert by_event["batch"]["service"] == "projector"
    assert by_event["main"]["service"] == "coach-run"


def test_console_format_is_not_json(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("demo", LogSettings(format="console"))
    logging.getLogger("c").warning("readable line token=abc")
    err = capsys.readouterr().err
    assert "readable line" in err and "abc" not in err and not _lines(err)
