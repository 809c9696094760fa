"""The settings reference: every component's settings class rendered as one Markdown table.

``coach settings`` prints it; the README embeds it and ``tests/unit/coach/test_settings_table.py`` fails when
the README misses a variable.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

_REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["SETTINGS_CLASSES", "settings_rows", "render_markdown"]

SETTINGS_CLASSES: tuple[str, ...] = (
    "runtime.settings:PlatformSettings",
    "stack.settings:StackSettings",
    "runtime.blobstore:BlobSettings",
    "runtime.logs:LogSettings",
    "runtime.principals:AuthSettings",
    "ingestion.settings:IngestionSettings",
    "transcription.settings:TranscriptionSettings",
    "transcription.hesitation:HesitationSettings",
    "transcription.worker:WorkerSettings",
    "projections.projector:ProjectorSettings",
    "projections.debezium:DebeziumSettings",
    "feedback.settings:FeedbackSettings",
    "api.settings:ApiSettings",
    "flows.settings:FlowSettings",
)
"""``module:Class`` of every settings class, in the order of the table."""


def _load(spec: str) -> type[BaseSettings]:
    module, name = spec.split(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def settings_rows() -> list[tuple[str, str, str, str]]:
    """``(variable, default, component, description)`` for every field, duplicates (same variable) once."""
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for spec in SETTINGS_CLASSES:
        cls = _load(spec)
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            variable = f"{prefix}{name}".upper()
            if variable in seen:
                continue
            seen.add(variable)
            default: Any = field.default if field.default_factory is None else "(computed)"
            description = (
                (field.description or "").split(": ", 1)[-1]
                if (field.description or "").startswith(variable)
                else (field.description or "")
            )
            shown = "" if default is None else str(default).replace(str(_REPO_ROOT), "<repo>")
            rows.append((variable, shown, cls.__name__, description))
    return rows


def render_markdown() -> str:
    """The settings table in Markdown."""
    lines = ["| variable | default | component | meaning |", "| --- | --- | --- | --- |"]
    for variable, default, component, description in settings_rows():
        text = description.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{variable}` | `{default}` | {component} | {text} |")
    return "\n".join(lines) + "\n"
