"""Summaries of a learner's window: distributions of the per-submission metrics and vocabulary over the window.

Engine-agnostic: :func:`window_row` turns the submissions a window collected into one
``learner_metrics_windows`` row. The per-submission metric values come from :func:`flows.metrics.compute_metrics`
(through :class:`flows.records.Scored`); vocabulary is :func:`flows.metrics.vocabulary_metrics` of the window's
concatenated words, because lexical diversity is only comparable over enough tokens (MATTR and MTLD are reported
from 50 lexical tokens on, ``vocabulary_sufficient``), computed by :func:`flows.metrics.batch_vocabulary` from the
tokens normalised once per submission (:func:`flows.metrics.lexical_tokens`), since each submission is in nine
windows.

Definitions:

* a submission seen twice in one window (a corrected transcript of the same ``submission_id``) counts once: the
  one with the latest ``occurred_at`` (then the latest Kafka position) wins, as in ``submission_metrics``;
* ``<metric>_avg|min|p50|p90|max`` summarise the submissions where the metric is defined (``None`` values, e.g.
  the mean pause of a submission without pauses, are left out; all ``None`` when none is defined), as defined in
  :mod:`flows.distributions`;
* ``filled_pauses_per_100_words`` and ``repetitions_per_100_words`` are pooled over the window (totals over total
  words), next to the per-submission distribution of ``filled_pauses_per_100_words``; ``filled_pauses_per_minute``
  is pooled over the speech span (``total_duration_s``);
* filled pauses are known only for submissions whose transcript had hesitation detection
  (``hesitation_detection``; :func:`flows.metrics.known_filled_pauses`): ``filled_pause_count``, the pooled
  filled-pause rates and the filled-pause distributions are over those submissions only
  (``hesitation_detected_submissions``), the rates ``None`` when there are none;
* words are concatenated in ``(occurred_at, submission_id)`` order, so the result does not depend on arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter

import numpy as np

from flows.calendar import WindowBounds, wall_to_instant
from flows.distributions import batch_distributions
from flows.metrics import FILLED_PAUSE_MEASURES, METRICS_VERSION, VocabularyMetrics, batch_vocabulary
from flows.records import WindowItem, per_100_words
from flows.tables import WINDOW_DISTRIBUTION_METRICS

__all__ = [
    "ClosedWindow",
    "distribution",
    "latest_per_submission",
    "window_row",
    "window_rows",
]


def distribution(values: Sequence[float | None]) -> tuple[float | None, ...]:
    """``(avg, min, p50, p90, max)`` of the defined values (definitions: :mod:`flows.distributions`); all ``None``
    when none is defined. A batch of one of :func:`flows.distributions.batch_distributions`."""
    column = np.array([math.nan if value is None else value for value in values], dtype=np.float64).reshape(-1, 1)
    stats = batch_distributions(column, np.arange(column.shape[0]), np.array([0, column.shape[0]]))
    return tuple(None if value != value else value for value in stats[0, 0].tolist())


def latest_per_submission(items: Sequence[WindowItem]) -> list[WindowItem]:
    """One item per submission (the latest by ``occurred_at``, then Kafka position), in
    ``(occurred_at, submission_id)`` order."""
    latest: dict[str, WindowItem] = {}
    for item in items:
        kept = latest.get(item.submission_id)
        if kept is None or (item.occurred_at, item.source_partition, item.source_offset) >= (
            kept.occurred_at,
            kept.source_partition,
            kept.source_offset,
        ):
            latest[item.submission_id] = item
    return sorted(latest.values(), key=lambda item: (item.occurred_at, item.submission_id))


_metric_values_of = attrgetter(*WINDOW_DISTRIBUTION_METRICS)
_FILLED = [index for index, name in enumerate(WINDOW_DISTRIBUTION_METRICS) if name in FILLED_PAUSE_MEASURES]
_totalled = attrgetter(
    "word_count",
    "filled_pause_count",
    "repetition_count",
    "total_duration_s",
    "phonation_time_s",
    "asr_model",
    "metrics_version",
    "syllable_count",
    "hesitation_detection",
)


def _metric_values(item: WindowItem) -> tuple[float | int | None, ...]:
    """The item's value of each name of ``WINDOW_DISTRIBUTION_METRICS`` (in that order): its attribute of that name,
    the filled-pause ones (:data:`flows.metrics.FILLED_PAUSE_MEASURES`) ``None`` (unknown) when the item had no
    hesitation detection. One attribute fetch serves every metric."""
    values = _metric_values_of(item)
    if item.hesitation_detection:
        return values  # type: ignore[no-any-return]
    masked = list(values)
    for index in _FILLED:
        masked[index] = None
    return tuple(masked)


def window_row(
    user_id: str, timezone: str, bounds: WindowBounds, items: Sequence[WindowItem], computed_at: datetime
) -> tuple[object, ...]:
    """The ``learner_metrics_windows`` row of one closed window (columns: ``flows.tables.WINDOW_COLUMNS``).

    ``bounds`` are local wall-clock bounds in ``timezone``; ``items`` the submissions the window collected (at
    least one). Raises ``ValueError`` on an empty window.
    """
    return window_rows([(user_id, timezone, bounds, items)], computed_at)[0]


ClosedWindow = tuple[str, str, WindowBounds, Sequence[WindowItem]]
"""``(user_id, timezone, bounds, items)`` of a closed window, as :func:`window_row` takes them."""


def window_rows(windows: Sequence[ClosedWindow], computed_at: datetime) -> list[tuple[object, ...]]:
    """:func:`window_row` of each closed window, in order. The vocabulary of all of them is computed at once
    (:func:`flows.metrics.batch_vocabulary`), and so are their distributions
    (:func:`flows.distributions.batch_distributions`). Raises ``ValueError`` if a window is empty."""
    kept_of = []
    for _user_id, _timezone, _bounds, items in windows:
        if not items:
            raise ValueError("a window without submissions has no row")
        kept_of.append(latest_per_submission(items))
    vocabularies = batch_vocabulary([[item.lexical_tokens for item in kept] for kept in kept_of])
    distributions = _batch_distributions(kept_of)
    return [
        _row(user_id, timezone, bounds, kept, vocabulary, summaries, computed_at)
        for (user_id, timezone, bounds, _items), kept, vocabulary, summaries in zip(
            windows, kept_of, vocabularies, distributions, strict=True
        )
    ]


def _batch_distributions(kept_of: Sequence[Sequence[WindowItem]]) -> list[list[float | None]]:
    """For each window's kept items, the concatenated :func:`distribution` of each metric of
    ``WINDOW_DISTRIBUTION_METRICS`` (the row's ``<metric>_avg..max`` values), from one compiled call for all
    windows (an item in several windows is one row of the values)."""
    rows: dict[int, int] = {}
    values: list[tuple[float | int | None, ...]] = []
    members: list[int] = []
    offsets = [0]
    for kept in kept_of:
        for item in kept:
            row = rows.get(id(item))
            if row is None:
                row = rows[id(item)] = len(values)
                values.append(_metric_values(item))
            members.append(row)
        offsets.append(len(members))
    matrix = np.array(values, dtype=np.float64).reshape(len(values), len(WINDOW_DISTRIBUTION_METRICS))
    stats = batch_distributions(matrix, np.array(members, dtype=np.int64), np.array(offsets, dtype=np.int64))
    return [[None if value != value else value for value in flat] for flat in stats.reshape(len(kept_of), -1).tolist()]


def _row(
    user_id: str,
    timezone: str,
    bounds: WindowBounds,
    kept: Sequence[WindowItem],
    vocabulary: VocabularyMetrics,
    distributions: Sequence[float | None],
    computed_at: datetime,
) -> tuple[object, ...]:
    """The row of one window from its kept submissions (:func:`latest_per_submission`), its vocabulary and the
    distributions of its metric columns (:func:`_batch_distributions`)."""
    word_counts, filled_counts, repetition_counts, durations, phonations, models, versions, syllables, detected = zip(
        *map(_totalled, kept), strict=True
    )
    words, repetitions = sum(word_counts), sum(repetition_counts)
    # Filled pauses are known only where a hesitation detector ran: totals over those submissions.
    heard = [index for index, ran in enumerate(detected) if ran]
    filled = sum(filled_counts[index] for index in heard)
    heard_words = sum(word_counts[index] for index in heard)
    heard_span_s = math.fsum(durations[index] for index in heard)
    version = versions[0] if versions.count(versions[0]) == len(versions) else METRICS_VERSION
    return (
        user_id,
        bounds.kind.value,
        wall_to_instant(bounds.start, timezone),
        wall_to_instant(bounds.end, timezone),
        timezone,
        bounds.start.date(),
        len(kept),
        kept[0].occurred_at,
        kept[-1].occurred_at,
        words,
        math.fsum(durations),
        math.fsum(phonations),
        *distributions,
        filled,
        per_100_words(filled, heard_words),
        repetitions,
        per_100_words(repetitions, words),
        vocabulary.token_count,
        vocabulary.distinct_words,
        vocabulary.mattr,
        vocabulary.mtld,
        vocabulary.sufficient,
        sum(syllables),
        len(heard),
        60.0 * filled / heard_span_s if heard and heard_span_s > 0 else None,
        sorted(set(models)),
        version,
        computed_at,
    )
