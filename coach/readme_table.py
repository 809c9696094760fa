"""Keeps the README's settings table in sync with the settings classes (``coach settings --write-readme``)."""

from __future__ import annotations

from pathlib import Path

from coach.settings_table import render_markdown

__all__ = ["README", "START", "END", "readme_with_table"]

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def readme_with_table(text: str) -> str:
    """``text`` with the block between the markers replaced by the current table. Raises ValueError without markers."""
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} … {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render_markdown()}{END}{tail}"
