"""Server-side charts of a learner's windows: matplotlib figures rendered to inline SVG (no JavaScript).

matplotlib is used through its object-oriented API (``Figure``, no pyplot state); rendering is serialised by a
lock because its rc parameters and text layout caches are process-global.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from api.models import WindowPoint

__all__ = ["CHARTS", "Chart", "render_chart_svg"]

_LOCK = threading.Lock()
_RC: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "coach-progress", "font.size": 9}


@dataclass(frozen=True)
class Chart:
    """One chart: an id (used as the element id), a title, the y-axis label and the plotted metrics."""

    id: str
    title: str
    y_label: str
    lines: tuple[tuple[str, str], ...]  # (WindowPoint field, legend label)


CHARTS: tuple[Chart, ...] = (
    Chart(
        "pace",
        "Pace",
        "words per minute",
        (("speech_rate_wpm", "speech rate"), ("articulation_rate_wpm", "articulation rate")),
    ),
    Chart(
        "pace_syllables",
        "Pace in syllables",
        "syllables per second",
        (("speech_rate_sps", "speech rate"), ("articulation_rate_sps", "articulation rate")),
    ),
    Chart("pauses", "Silent pauses", "pauses per minute", (("silent_pauses_per_minute", "silent pauses / min"),)),
    Chart("pause_length", "Pause length", "seconds", (("mean_silent_pause_s", "mean silent pause"),)),
    Chart(
        "fillers",
        "Fillers and repetitions",
        "per 100 words",
        (("filled_pauses_per_100_words", "filled pauses (um, uh, er)"), ("repetitions_per_100_words", "repetitions")),
    ),
    Chart("vocabulary", "Vocabulary diversity (MATTR)", "MATTR (50-token window)", (("mattr", "MATTR"),)),
    Chart("vocabulary_mtld", "Vocabulary diversity (MTLD)", "MTLD", (("mtld", "MTLD"),)),
)
"""Charts of the progress page, in page order."""

_VOCABULARY = {"mattr", "mtld"}


def render_chart_svg(chart: Chart, windows: Sequence[WindowPoint]) -> str:
    """The ``<svg>`` element of ``chart`` over ``windows`` (by window start). A point without a value (or a
    vocabulary value from fewer than 50 tokens) is left out of its line."""
    with _LOCK, matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(6.4, 2.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for field, label in chart.lines:
            points = [
                (w.window_start, getattr(w, field))
                for w in windows
                if getattr(w, field) is not None and (field not in _VOCABULARY or w.vocabulary_sufficient)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_ylabel(chart.y_label)
        ax.set_title(chart.title, loc="left")
        ax.grid(alpha=0.3)
        if len(chart.lines) > 1 and ax.lines:
            ax.legend(loc="best", fontsize=8)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]
