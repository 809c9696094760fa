"""Logging of every service: structured JSON lines (or a human-readable console format), never a secret.

:func:`configure_logging` routes the standard library's ``logging`` (what every module of the platform and its
libraries log through) into structlog's :class:`~structlog.stdlib.ProcessorFormatter`
(https://www.structlog.org/en/stable/standard-library.html). Each line carries:

* ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message);
* ``service``: the service of ``coach run`` whose thread logged it (:mod:`runtime.service_states`), else the
  process's own service name; ``thread``;
* the ids a call site passes in ``extra`` (``submission_id``, ``event_id``, ``user_id``, ``topic``, ``partition``,
  ``offset``, ``consumer_group``, ``error_class``);
* ``exception``, when one is logged.

Credentials are redacted from every line (:func:`runtime.redaction.redact_secrets`: DSN passwords, ``password=``
pairs, quoted secret keys, bearer tokens and API keys). ``COACH_LOG_FORMAT=console`` switches to structlog's
console renderer for a terminal.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.redaction import redact_secrets
from runtime.service_states import states

__all__ = ["LOG_FIELDS", "LogSettings", "configure_logging"]

LOG_FIELDS: tuple[str, ...] = (
    "submission_id",
    "event_id",
    "user_id",
    "topic",
    "partition",
    "offset",
    "consumer_group",
    "error_class",
)
"""``extra`` keys of a log call that become fields of the line."""


class LogSettings(BaseSettings):
    """How services log (``COACH_LOG_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_LOG_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    format: Literal["json", "console"] = "json"
    """'json' (one JSON object per line, for log collectors) or 'console' (human-readable, for a terminal)"""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """the lowest level written"""


def _service_of(default: str) -> Any:
    def add(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        record = event.get("_record")
        thread = record.threadName if record is not None else threading.current_thread().name
        event.setdefault("service", thread if thread in states.snapshot() else default)
        event.setdefault("thread", thread)
        return event

    return add


def _extras(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        for key in LOG_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                event.setdefault(key, str(value) if not isinstance(value, int | float) else value)
    return event


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in ("event", "exception"):
        value = event.get(key)
        if isinstance(value, str):
            event[key] = redact_secrets(value)
    return event


def configure_logging(service: str, settings: LogSettings | None = None, *, level: int | str | None = None) -> None:
    """Send every ``logging`` record of this process to stderr as one structured line (see the module docstring).

    ``service`` names the process's service (``coach run``'s threads name their own); ``level`` overrides
    ``COACH_LOG_LEVEL``. Idempotent: a second call replaces the handler of the first.
    """
    settings = settings or LogSettings()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    pre_chain: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _service_of(service),
        _extras,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("coach")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "coach" or isinstance(existing, logging.StreamHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if level is not None else settings.level)
