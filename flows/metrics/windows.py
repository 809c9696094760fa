"""The window kinds of a learner's metrics: the one definition the dataflows, the replay and the API use.

A daily and a weekly **tumbling** window in the learner's local calendar, and a 7-day **sliding** window (hopping by a
day); values as stored in ClickHouse's ``learner_metrics_windows.window_kind`` (stable identifiers: renaming one
needs a note in ``docs/MIGRATIONS.md``). Window semantics: Bytewax ``TumblingWindower``/``SlidingWindower``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["KIND_ORDER", "WindowKind"]


class WindowKind(StrEnum):
    """The per-learner window kinds (values as stored in ``learner_metrics_windows.window_kind``)."""

    DAILY = "daily"
    WEEKLY = "weekly"
    SLIDING_7D = "sliding_7d"


KIND_ORDER: tuple[WindowKind, ...] = (WindowKind.DAILY, WindowKind.WEEKLY, WindowKind.SLIDING_7D)
"""Every kind, in this order: the position of each kind in a window id (``window_id % 3``) and the default order of
the API's series."""
