"""The speaking metrics, defined once: what the dataflows store, what ``feedback/`` judges and ``api/`` summarises.

Engine-free (no Bytewax, Kafka or ClickHouse import; numpy and numba only for the vocabulary kernel), so that
every component may import it. Modules:

* :mod:`~flows.metrics.transcript`: every metric of a transcript (:func:`compute_metrics`, and
  :func:`compute_metrics_batch`, which is the implementation; :func:`compute_metrics` is a batch of one), the
  single-measure functions, :data:`METRICS_VERSION`;
* :mod:`~flows.metrics.tokens`: how an ASR word becomes normalised tokens (:func:`tokenize`, :func:`lexical_tokens`);
* :mod:`~flows.metrics.vocabulary`: MATTR, MTLD and distinct words of a transcript or of a learner's window
  (:func:`batch_vocabulary`, compiled);
* :mod:`~flows.metrics.lexicon`: the word lists behind the disfluency measures, with their sources;
* :mod:`~flows.metrics.norms`: the reference values metrics are judged against (:data:`PACE_BAND`).

A change of any definition (a rule, a word list, a constant) is made here once and bumps :data:`METRICS_VERSION`.
"""

from __future__ import annotations

from flows.metrics.norms import PACE_BAND, PaceBand
from flows.metrics.tokens import is_filled_pause, lexical_tokens, tokenize
from flows.metrics.transcript import (
    DEFAULT_PAUSE_THRESHOLD_S,
    METRICS_VERSION,
    ScoredTranscript,
    SubmissionMetrics,
    TimedWord,
    TimedWords,
    articulation_rate,
    compute_metrics,
    compute_metrics_batch,
    count_discourse_markers,
    count_filled_pauses,
    find_discourse_markers,
    find_repetitions,
    mean_length_of_run,
    phonation_time,
    silent_pauses,
    speech_rate,
    total_duration,
    transcript_tokens,
    word_count,
)
from flows.metrics.vocabulary import (
    MATTR_WINDOW,
    MIN_VOCABULARY_TOKENS,
    MTLD_THRESHOLD,
    VocabularyMetrics,
    batch_vocabulary,
    lexical_vocabulary,
    mattr,
    mtld,
    vocabulary_metrics,
)

__all__ = [
    "DEFAULT_PAUSE_THRESHOLD_S",
    "MATTR_WINDOW",
    "METRICS_VERSION",
    "MIN_VOCABULARY_TOKENS",
    "MTLD_THRESHOLD",
    "PACE_BAND",
    "PaceBand",
    "ScoredTranscript",
    "SubmissionMetrics",
    "TimedWord",
    "TimedWords",
    "VocabularyMetrics",
    "articulation_rate",
    "batch_vocabulary",
    "compute_metrics",
    "compute_metrics_batch",
    "count_discourse_markers",
    "count_filled_pauses",
    "find_discourse_markers",
    "find_repetitions",
    "is_filled_pause",
    "lexical_tokens",
    "lexical_vocabulary",
    "mattr",
    "mean_length_of_run",
    "mtld",
    "phonation_time",
    "silent_pauses",
    "speech_rate",
    "tokenize",
    "total_duration",
    "transcript_tokens",
    "vocabulary_metrics",
    "word_count",
]
