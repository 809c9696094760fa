"""The speaking metrics, defined once: what the dataflows store, what ``feedback/`` judges and ``api/`` summarises.

Engine-free (no Bytewax, Kafka or ClickHouse import; numpy and numba only for the vocabulary kernel), so that
every component may import it. Modules:

* :mod:`~flows.metrics.transcript`: every metric of a transcript (:func:`compute_metrics`, and
  :func:`compute_metrics_batch`, which is the implementation; :func:`compute_metrics` is a batch of one), the
  single-measure functions, :data:`METRICS_VERSION`;
* :mod:`~flows.metrics.syllables`: the syllables of a token (:func:`syllable_count`; CMU Pronouncing Dictionary,
  rule-based fallback);
* :mod:`~flows.metrics.tokens`: how an ASR word becomes normalised tokens (:func:`tokenize`, :func:`lexical_tokens`);
* :mod:`~flows.metrics.vocabulary`: MATTR, MTLD and distinct words of a transcript or of a learner's window
  (:func:`batch_vocabulary`, compiled);
* :mod:`~flows.metrics.lexicon`: the word lists behind the disfluency measures, with their sources;
* :mod:`~flows.metrics.norms`: the reference values metrics are judged against (:data:`PACE_BAND`);
* :mod:`~flows.metrics.windows`: the window kinds of a learner's metrics (:class:`WindowKind`).

A change of any definition (a rule, a word list, a constant) is made here once and bumps :data:`METRICS_VERSION`.
"""

from __future__ import annotations

from flows.metrics import norms, syllables, tokens, transcript, vocabulary, windows
from flows.metrics.norms import *  # noqa: F403 - the package re-exports each module's __all__
from flows.metrics.syllables import *  # noqa: F403
from flows.metrics.tokens import *  # noqa: F403
from flows.metrics.transcript import *  # noqa: F403
from flows.metrics.vocabulary import *  # noqa: F403
from flows.metrics.windows import *  # noqa: F403

__all__: list[str] = []
__all__ += norms.__all__
__all__ += syllables.__all__
__all__ += tokens.__all__
__all__ += transcript.__all__
__all__ += vocabulary.__all__
__all__ += windows.__all__
